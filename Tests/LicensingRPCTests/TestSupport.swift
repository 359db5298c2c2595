import Foundation
import LicensingRPC
import LicensingWire
import Logging
import NIOCore
import NIOPosix
import Synchronization
import LicensingTestSupport
import Testing

/// Every RPC test runs one after another: they time things, and the 1,000-connection test
/// would otherwise starve the others on a 2-core machine.
@Suite(.serialized) enum RPCTests {}

let testLogger: Logger = {
    var logger = Logger(label: "rpc-tests")
    logger.logLevel = .critical
    return logger
}()

enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case unix, tcp
    var testDescription: String { rawValue }
}

extension Transport {
    func endpoint(in directory: TemporaryFolder) -> Endpoint {
        switch self {
        case .unix: return .unix(path: directory.socket())
        case .tcp: return .tcp(host: "127.0.0.1", port: 0)
        }
    }
}

/// The code of an `RPCError`, or nil for any other outcome.
func rpcCode(_ body: () async throws -> Void) async -> StatusCode? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error.code
    } catch {
        Issue.record("expected an RPCError, got \(type(of: error)): \(error)")
        return nil
    }
}

// MARK: Frames

func frame(_ bytes: [UInt8]) -> [UInt8] {
    let length = UInt32(bytes.count)
    return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + bytes
}

func frame(_ envelope: Envelope) -> [UInt8] { frame(envelope.serializedBytes()) }

// MARK: Raw connections

/// Collects whatever the server sends and notes when the connection closes.
final class ByteCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let state = Mutex<(bytes: [UInt8], closed: Bool)>(([], false))

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        state.withLock { $0.bytes.append(contentsOf: buffer.readableBytesView) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLock { $0.closed = true }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server's EOF, should half-closure be on.
        if case .inputClosed = event as? ChannelEvent { state.withLock { $0.closed = true } }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var closed: Bool { state.withLock { $0.closed } }
}

/// A socket that speaks bytes, not envelopes, for feeding the server bad input.
final class RawConnection: Sendable {
    let channel: any Channel
    private let collector: ByteCollector
    private let consumed = Mutex(0)

    private init(channel: any Channel, collector: ByteCollector) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(_ endpoint: Endpoint) async throws -> RawConnection {
        let collector = ByteCollector()
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
        let channel: any Channel
        switch endpoint {
        case .unix(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
        case .tcp(let host, let port): channel = try await bootstrap.connect(host: host, port: port).get()
        case .inProcess: throw RPCError(.invalidArgument, "a raw connection needs a socket")
        }
        return RawConnection(channel: channel, collector: collector)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Shuts the sending side: the server reads EOF.
    func finishSending() async throws {
        try await channel.close(mode: .output).get()
    }

    func close() async {
        try? await channel.close().get()
    }

    var received: [UInt8] { collector.bytes }
    var isClosed: Bool { collector.closed }

    /// Whether the server closed the connection within `limit`.
    func closedByServer(within limit: Duration) async -> Bool {
        await eventually(within: limit) { collector.closed }
    }

    /// The next whole frame from the server as an Envelope, or nil if none came in time.
    func nextEnvelope(within limit: Duration = .seconds(5)) async throws -> Envelope? {
        var result: [UInt8]?
        _ = await eventually(within: limit) {
            let bytes = collector.bytes
            let start = consumed.withLock { $0 }
            guard bytes.count - start >= 4 else { return false }
            let length = bytes[start..<start + 4].reduce(0) { $0 << 8 | Int($1) }
            guard bytes.count - start - 4 >= length else { return false }
            result = Array(bytes[(start + 4)..<(start + 4 + length)])
            consumed.withLock { $0 = start + 4 + length }
            return true
        }
        guard let result else { return nil }
        return try Envelope(serializedBytes: result)
    }
}

/// Runs `body` against a server on `endpoints` (the shared helper, with this target's quiet logger).
func withServer<T>(
    _ router: RPCRouter, on endpoints: [Endpoint], limits: FrameLimits = FrameLimits(), defaultTimeout: Duration = .seconds(30),
    _ body: ([Endpoint]) async throws -> T
) async throws -> T {
    try await LicensingTestSupport.withServer(router, on: endpoints, limits: limits, defaultTimeout: defaultTimeout, logger: testLogger, body)
}
