import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// An e-mail with a plain-text and an HTML part.
public struct MailMessage: Sendable {
    public let to: String
    public let subject: String
    public let text: String
    public let html: String
}

/// Where e-mail goes: SMTP in production, a stand-in where a test wants one.
public protocol Mailer: Sendable {
    func send(_ message: MailMessage) async throws
}

/// An SMTP client (RFC 5321) for the few messages a license manager sends: EHLO, STARTTLS
/// when asked (the server's certificate checked against `ca`, or the system's roots), AUTH
/// PLAIN when a user is set, one recipient per message, 8-bit UTF-8 bodies.
public struct SMTPMailer: Mailer {
    public struct Settings: Sendable {
        public var host: String
        public var port: Int
        public var startTLS: Bool
        public var user: String?
        public var password: String?
        public var from: String
        /// CA (PEM) that signed the server's certificate; nil: the system's roots.
        public var ca: String?
        public var timeout: TimeAmount = .seconds(30)

        public init(host: String, port: Int = 25, startTLS: Bool = false, user: String? = nil, password: String? = nil, from: String, ca: String? = nil) {
            self.host = host
            self.port = port
            self.startTLS = startTLS
            self.user = user
            self.password = password
            self.from = from
            self.ca = ca
        }
    }

    let settings: Settings

    enum Failure: Error, CustomStringConvertible {
        case refused(String, String)
        case closed(String)
        case unsupported(String)

        var description: String {
            switch self {
            case .refused(let command, let reply): "the SMTP server refused \(command): \(reply)"
            case .closed(let step): "the SMTP server closed the connection during \(step)"
            case .unsupported(let what): "the SMTP server does not offer \(what)"
            }
        }
    }

    public func send(_ message: MailMessage) async throws {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(settings.timeout)
            .connect(host: settings.host, port: settings.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SMTPLineDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let raw = channel.channel
        // A server that stops answering must not hold reminders up: the whole exchange has
        // a deadline, after which the connection is closed.
        let deadline = settings.timeout
        let watchdog = Task {
            try await Task.sleep(for: .nanoseconds(deadline.nanoseconds))
            try? await raw.close()
        }
        defer { watchdog.cancel() }
        try await channel.executeThenClose { inbound, outbound in
            var lines = inbound.makeAsyncIterator()
            /// One reply, multi-line ones included: its code and text.
            func reply(_ step: String) async throws -> (Int, [String]) {
                var text: [String] = []
                while true {
                    guard let buffer = try await lines.next() else { throw Failure.closed(step) }
                    let line = String(buffer: buffer)
                    text.append(String(line.dropFirst(4)))
                    guard line.count >= 3, let code = Int(line.prefix(3)) else { throw Failure.refused(step, line) }
                    if line.count == 3 || line.dropFirst(3).first == " " { return (code, text) }
                }
            }
            func command(_ line: String, shown: String? = nil, expect: ClosedRange<Int>) async throws -> [String] {
                try await outbound.write(ByteBuffer(string: line + "\r\n"))
                let (code, text) = try await reply(shown ?? line)
                guard expect.contains(code) else { throw Failure.refused(shown ?? line, "\(code) \(text.joined(separator: " "))") }
                return text
            }
            let (greeting, banner) = try await reply("the greeting")
            guard greeting == 220 else { throw Failure.refused("the connection", "\(greeting) \(banner.joined(separator: " "))") }
            var capabilities = try await command("EHLO license-manager", expect: 250...250)
            if settings.startTLS {
                guard capabilities.contains(where: { $0.uppercased().hasPrefix("STARTTLS") }) else { throw Failure.unsupported("STARTTLS") }
                _ = try await command("STARTTLS", expect: 220...220)
                var configuration = TLSConfiguration.makeClientConfiguration()
                configuration.minimumTLSVersion = .tlsv12
                if let ca = settings.ca { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
                let context = try NIOSSLContext(configuration: configuration)
                let tls = try NIOSSLClientHandler(context: context, serverHostname: settings.host.first?.isNumber == true ? nil : settings.host)
                try await raw.pipeline.addHandler(tls, position: .first)
                capabilities = try await command("EHLO license-manager", expect: 250...250)
            }
            if let user = settings.user, let password = settings.password {
                let token = Data("\0\(user)\0\(password)".utf8).base64EncodedString()
                _ = try await command("AUTH PLAIN \(token)", shown: "AUTH PLAIN (credentials)", expect: 235...235)
            }
            let eightBit = capabilities.contains { $0.uppercased().hasPrefix("8BITMIME") }
            _ = try await command("MAIL FROM:<\(settings.from)>" + (eightBit ? " BODY=8BITMIME" : ""), expect: 250...250)
            _ = try await command("RCPT TO:<\(message.to)>", expect: 250...251)
            _ = try await command("DATA", expect: 354...354)
            try await outbound.write(ByteBuffer(string: Self.render(message, from: settings.from) + ".\r\n"))
            let (accepted, text) = try await reply("the message")
            guard accepted == 250 else { throw Failure.refused("the message", "\(accepted) \(text.joined(separator: " "))") }
            _ = try? await command("QUIT", expect: 221...221)
        }
    }

    /// The message as sent after DATA: headers, a multipart/alternative body with CRLF line
    /// ends, lines starting with a dot doubled (RFC 5321 4.5.2).
    static func render(_ message: MailMessage, from: String) -> String {
        let boundary = "lm-" + UUID().uuidString.lowercased()
        let date = { () -> String in
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
            return formatter.string(from: Date())
        }()
        let subject = message.subject.allSatisfy(\.isASCII)
            ? message.subject : "=?UTF-8?B?\(Data(message.subject.utf8).base64EncodedString())?="
        let lines = [
            "From: \(from)", "To: \(message.to)", "Subject: \(subject)", "Date: \(date)",
            "Message-ID: <\(UUID().uuidString.lowercased())@license-manager>", "MIME-Version: 1.0",
            "Content-Type: multipart/alternative; boundary=\"\(boundary)\"", "",
            "--\(boundary)", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", message.text,
            "--\(boundary)", "Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", message.html,
            "--\(boundary)--", "",
        ]
        return lines.joined(separator: "\n").split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix(".") ? "." + $0 : String($0) }
            .joined(separator: "\r\n")
    }
}

/// Cuts what the server sends into lines, without their CRLF (at most 4 KiB a line).
struct SMTPLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > 4096 { throw SMTPMailer.Failure.refused("reading", "a reply line longer than 4 KiB") }
            return .needMoreData
        }
        var line = buffer.readSlice(length: newline - buffer.readerIndex + 1)!
        line.moveWriterIndex(to: line.writerIndex - 1)
        if line.readableBytesView.last == UInt8(ascii: "\r") { line.moveWriterIndex(to: line.writerIndex - 1) }
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}
