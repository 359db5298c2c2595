import LicensingWire
import Logging

/// One incoming call as a handler sees it.
public struct ServerCall: Sendable {
    public let method: String
    public let payload: [UInt8]
    public let metadata: RPCMetadata
    /// When the caller stops waiting; handlers pass it on to the calls they make.
    public let deadline: ContinuousClock.Instant
    public let logger: Logger
    /// The caller's IP address, or "unix" for local callers.
    public let peer: String

    public init(
        method: String, payload: [UInt8], metadata: RPCMetadata, deadline: ContinuousClock.Instant, logger: Logger, peer: String = "unix"
    ) {
        self.method = method
        self.payload = payload
        self.metadata = metadata
        self.deadline = deadline
        self.logger = logger
        self.peer = peer
    }

    /// Decodes the request; a payload that does not decode is the caller's error.
    public func decode<M: WireMessage>(_: M.Type = M.self) throws(RPCError) -> M {
        do {
            return try M(serializedBytes: payload)
        } catch {
            throw .invalidArgument("payload of \(method) does not decode as \(M.protoName)")
        }
    }
}

/// Sends the messages of a server-streaming call.
public struct ResponseStream: Sendable {
    let sendPayload: @Sendable ([UInt8]) async throws -> Void

    public init(_ send: @escaping @Sendable ([UInt8]) async throws -> Void) {
        self.sendPayload = send
    }

    public func send(_ payload: [UInt8]) async throws {
        try await sendPayload(payload)
    }

    public func send<M: WireMessage>(_ message: M) async throws {
        try await sendPayload(message.serializedBytes())
    }
}

public enum MethodHandler: Sendable {
    case unary(@Sendable (ServerCall) async throws -> [UInt8])
    case serverStreaming(@Sendable (ServerCall, ResponseStream) async throws -> Void)
}

/// Maps method names to handlers. A method with no handler answers `UNIMPLEMENTED`.
public struct RPCRouter: Sendable {
    private var exact: [String: MethodHandler] = [:]

    public init() {}

    public mutating func register<Request, Response>(
        _ method: WireMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, ServerCall) async throws -> Response
    ) {
        precondition(!method.serverStreaming, "\(method.name) is server-streaming: use registerStream")
        exact[method.name] = .unary { call in
            let request: Request = try call.decode()
            return try await body(request, call).serializedBytes()
        }
    }

    public mutating func registerStream<Request, Response>(
        _ method: WireMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, ServerCall, TypedResponseStream<Response>) async throws -> Void
    ) {
        precondition(method.serverStreaming, "\(method.name) is unary: use register")
        exact[method.name] = .serverStreaming { call, stream in
            let request: Request = try call.decode()
            try await body(request, call, TypedResponseStream(stream))
        }
    }

    public mutating func register(name: String, _ handler: MethodHandler) {
        exact[name] = handler
    }

    public func handler(for method: String) -> MethodHandler? {
        exact[method]
    }

    public var registeredMethods: [String] { exact.keys.sorted() }
}

public struct TypedResponseStream<Response: WireMessage>: Sendable {
    let stream: ResponseStream
    init(_ stream: ResponseStream) { self.stream = stream }
    public func send(_ message: Response) async throws { try await stream.send(message) }
}
