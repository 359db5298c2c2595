/// Where a server listens or a client connects: `unix:/path/to.sock` or `host:port`
/// (also `tcp://host:port`); or a server in the same process, which tests call with no socket.
public enum Endpoint: Hashable, Sendable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)
    case inProcess(InProcessServer)

    public init(parsing text: String) throws(RPCError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard !path.isEmpty else { throw .invalidArgument("endpoint \"\(text)\": empty socket path") }
            self = .unix(path: path)
            return
        }
        var rest = Substring(text)
        if rest.hasPrefix("tcp://") { rest = rest.dropFirst("tcp://".count) }
        guard let colon = rest.lastIndex(of: ":") else {
            throw .invalidArgument("endpoint \"\(text)\": expected unix:/path or host:port")
        }
        let portText = rest[rest.index(after: colon)...]
        guard !portText.isEmpty, portText.allSatisfy({ ("0"..."9").contains($0) }), let port = Int(portText),
            (0...65535).contains(port)
        else {
            throw .invalidArgument("endpoint \"\(text)\": expected unix:/path or host:port")
        }
        var host = rest[..<colon]
        if host.hasPrefix("[") || host.hasSuffix("]") {
            guard host.hasPrefix("["), host.hasSuffix("]"), host.count >= 2 else {
                throw .invalidArgument("endpoint \"\(text)\": unbalanced brackets")
            }
            host = host.dropFirst().dropLast()
        } else if host.contains(":") {
            throw .invalidArgument("endpoint \"\(text)\": an IPv6 address needs brackets, as in [::1]:port")
        }
        guard !host.isEmpty else { throw .invalidArgument("endpoint \"\(text)\": empty host") }
        guard !host.contains(where: { $0 == "/" || $0 == "[" || $0 == "]" || $0.isWhitespace }) else {
            throw .invalidArgument("endpoint \"\(text)\": \"\(host)\" is not a host name or address")
        }
        self = .tcp(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .inProcess(let server): return "in-process:\(server.name)"
        }
    }
}

extension InProcessServer: Hashable {
    public static func == (lhs: InProcessServer, rhs: InProcessServer) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}
