import LicensingWire
import Logging

/// One incoming call as a handler sees it.
public struct ServerCall: Sendable {
    public let method: String
    public let payload: [UInt8]
    public let metadata: RPCMetadata
    /// When the caller stops waiting; handlers pass it on to the calls they make.
    public let deadline: ContinuousClock.Instant
    /// The server's logger; `logger` adds the method and the caller's trace id.
    public let serverLogger: Logger
    /// The caller's IP address, or for local callers `unix:uid=U:pid=P` (their peer
    /// credentials), or "unix" where those are unknown.
    public let peer: String
    /// For a local caller, its user alone (`unix:uid=U`), for limits per user; nil for TCP.
    public let localUser: String?
    /// What the transport that carried the call knows about it: for the socket transport,
    /// the connection's event loop, so calls this one makes prefer connections on the same
    /// loop and the answer needs no hop between threads.
    public let transportSpecific: (any Sendable)?

    public init(
        method: String, payload: [UInt8], metadata: RPCMetadata, deadline: ContinuousClock.Instant, logger: Logger, peer: String = "unix",
        localUser: String? = nil, transportSpecific: (any Sendable)? = nil
    ) {
        self.localUser = localUser
        self.method = method
        self.payload = payload
        self.metadata = metadata
        self.deadline = deadline
        self.serverLogger = logger
        self.peer = peer
        self.transportSpecific = transportSpecific
    }

    /// The same call with other metadata (an interceptor's view of it).
    public func with(metadata: RPCMetadata) -> ServerCall {
        ServerCall(
            method: method, payload: payload, metadata: metadata, deadline: deadline, logger: serverLogger, peer: peer,
            localUser: localUser, transportSpecific: transportSpecific)
    }

    /// Built when asked for: most calls never log, and the metadata costs allocations.
    public var logger: Logger {
        var logger = serverLogger
        logger[metadataKey: "method"] = "\(method)"
        if let trace = metadata[RPCMetadata.traceID] { logger[metadataKey: "trace"] = "\(trace)" }
        return logger
    }

    /// Decodes the request; a payload that does not decode, a string that is not UTF-8 text
    /// and an integer outside ``RequestBounds`` are the caller's error.
    public func decode<M: WireMessage>(_: M.Type = M.self) throws(RPCError) -> M {
        do {
            return try M(serializedBytes: payload, integers: RequestBounds.check)
        } catch {
            switch error {
            case .undecodable:
                throw .invalidArgument("payload of \(method) does not decode as \(M.protoName)")
            case .invalidField(let field, let problem):
                throw .invalidArgument("\(field) \(problem)")
            }
        }
    }
}

/// Sends the messages of a server-streaming call.
public struct ResponseStream: Sendable {
    package let sendPayload: @Sendable ([UInt8]) async throws -> Void

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
    /// Runs in a task on the connection's event loop.
    case unary(@Sendable (ServerCall) async throws -> [UInt8])
    /// Runs on the event loop as the request is read, with no task: for short work that
    /// never blocks (a look-up in memory or an indexed read). It answers at once or says
    /// how the answer will come.
    case immediate(@Sendable (ServerCall) throws -> ImmediateReply)
    case serverStreaming(@Sendable (ServerCall, ResponseStream) async throws -> Void)
}

/// What an immediate handler gives back.
public enum ImmediateReply: Sendable {
    case answer([UInt8])
    /// The answer needs waiting after all: it comes from a task on the connection's loop.
    case later(@Sendable () async throws -> [UInt8])
    /// The answer comes from a call already under way, e.g. one forwarded to another service.
    case pending(any PendingAnswer)
}

/// An answer that arrives later by callback (the socket transport's futures are one): the
/// gateway forwards a call without a task per call.
public protocol PendingAnswer: Sendable {
    func whenComplete(_ body: @escaping @Sendable (Result<[UInt8], any Error>) -> Void)
}

/// What a typed immediate handler gives back.
public enum Immediate<Response: WireMessage>: Sendable {
    case answer(Response)
    case later(@Sendable () async throws -> Response)
}

/// Maps method names to handlers. A method with no handler answers `UNIMPLEMENTED`.
public struct RPCRouter: Sendable {
    private var exact: [String: MethodHandler] = [:]
    /// Run around every call, in order (see ``ServerInterceptor``).
    public var interceptors: [any ServerInterceptor] = []

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

    /// Registers a handler that runs on the event loop as the request is read (see
    /// ``MethodHandler/immediate(_:)``); it must not block.
    public mutating func registerImmediate<Request, Response>(
        _ method: WireMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, ServerCall) throws -> Immediate<Response>
    ) {
        precondition(!method.serverStreaming, "\(method.name) is server-streaming: use registerStream")
        exact[method.name] = .immediate { call in
            let request: Request = try call.decode()
            switch try body(request, call) {
            case .answer(let response): return .answer(response.serializedBytes())
            case .later(let work): return .later { try await work().serializedBytes() }
            }
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
    package let stream: ResponseStream
    package init(_ stream: ResponseStream) { self.stream = stream }
    public func send(_ message: Response) async throws { try await stream.send(message) }
}
