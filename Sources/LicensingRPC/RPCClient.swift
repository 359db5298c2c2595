#if canImport(Glibc)
import Glibc
#endif
import LicensingWire
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

public struct RPCClientConfiguration: Sendable {
    /// Connections kept to the endpoint; calls are spread over them and multiplexed on each.
    public var connections: Int
    public var connectTimeout: Duration
    /// Used when a call names no timeout of its own.
    public var defaultTimeout: Duration
    public var limits: FrameLimits
    /// TLS for TCP endpoints (ignored for Unix sockets); nil = plaintext.
    public var tls: NIOSSLContext?
    /// The name the server's certificate must carry; default: the endpoint's host.
    public var serverHostname: String?
    /// Sent with every call (a call's own metadata wins), e.g. the API key.
    public var metadata: RPCMetadata

    public init(
        connections: Int = 2,
        connectTimeout: Duration = .seconds(1),
        defaultTimeout: Duration = .seconds(30),
        limits: FrameLimits = FrameLimits(partialFrameTimeout: .seconds(30)),
        tls: NIOSSLContext? = nil,
        serverHostname: String? = nil,
        metadata: RPCMetadata = [:]
    ) {
        self.connections = max(1, connections)
        self.connectTimeout = connectTimeout
        self.defaultTimeout = defaultTimeout
        self.limits = limits
        self.tls = tls
        self.serverHostname = serverHostname
        self.metadata = metadata
    }
}

/// Calls methods on one endpoint over a small pool of reused, multiplexed connections.
/// A broken connection is replaced on the next call.
public final class RPCClient: Sendable {
    public let endpoint: Endpoint
    private let configuration: RPCClientConfiguration
    private let group: any EventLoopGroup
    private let slots: [SlotBox]
    /// The event loop each slot's connection lives on, and the slots of each loop: a call
    /// made on an event loop uses a connection of that loop, so its answer needs no hop.
    private let slotLoops: [any EventLoop]
    private let slotsByLoop: [ObjectIdentifier: [Int]]
    private let nextSlot = Atomic<Int>(0)
    /// The server, when it runs in this process (``Endpoint/inProcess(_:)``): no connections.
    private let local: InProcessServer?

    /// One pooled connection's state, shared with the callbacks that complete its connect.
    private final class SlotBox: Sendable {
        let state = Mutex<Slot>(.idle)
    }

    private enum Slot {
        case idle
        case connecting(EventLoopFuture<ClientConnection>)
        case ready(ClientConnection)
        case closed
    }

    public init(
        endpoint: Endpoint,
        configuration: RPCClientConfiguration = RPCClientConfiguration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.group = group
        self.slots = (0..<configuration.connections).map { _ in SlotBox() }
        let loops = Array(group.makeIterator())
        self.slotLoops = (0..<configuration.connections).map { loops[$0 % loops.count] }
        var slotsByLoop: [ObjectIdentifier: [Int]] = [:]
        for (index, loop) in slotLoops.enumerated() { slotsByLoop[ObjectIdentifier(loop), default: []].append(index) }
        self.slotsByLoop = slotsByLoop
        if case .inProcess(let server) = endpoint { local = server } else { local = nil }
    }

    // MARK: Calls

    /// Calls a unary method. Throws ``RPCError`` with the server's status when it is not OK.
    public func call<Request, Response>(
        _ method: WireMethod<Request, Response>,
        _ request: Request,
        metadata: RPCMetadata = [:],
        timeout: Duration? = nil
    ) async throws -> Response {
        let payload = try await callRaw(method.name, payload: request.serializedBytes(), metadata: metadata, deadline: deadline(timeout))
        do {
            return try Response(serializedBytes: payload)
        } catch {
            throw RPCError(.internal, "the answer of \(method.name) does not decode as \(Response.protoName)")
        }
    }

    /// Calls a unary method with an encoded payload, for code that runs on event loops:
    /// the gateway forwards calls this way. `eventLoop` is the caller's loop, if any.
    public func callRawFuture(
        _ method: String,
        payload: [UInt8],
        metadata: RPCMetadata,
        deadline: ContinuousClock.Instant,
        on eventLoop: (any EventLoop)?
    ) -> EventLoopFuture<[UInt8]> {
        if let local {
            let answer = (eventLoop ?? group.any()).makePromise(of: [UInt8].self)
            let metadata = merged(metadata)
            answer.completeWithTask { try await local.unary(method, payload: payload, metadata: metadata, deadline: deadline) }
            return answer.futureResult
        }
        let request: (envelope: Envelope, remaining: Duration)
        do {
            request = try envelope(method, payload, metadata, deadline)
        } catch {
            return (eventLoop ?? group.any()).makeFailedFuture(error)
        }
        return connectionFuture(preferring: eventLoop)
            .flatMap { connection in connection.send(request.envelope, timeout: request.remaining).1 }
            .flatMapThrowing { reply in try Self.answer(reply) }
    }

    /// Calls a unary method with an encoded payload.
    public func callRaw(
        _ method: String,
        payload: [UInt8],
        metadata: RPCMetadata,
        deadline: ContinuousClock.Instant
    ) async throws -> [UInt8] {
        if let local { return try await local.unary(method, payload: payload, metadata: merged(metadata), deadline: deadline) }
        let request = try envelope(method, payload, metadata, deadline)
        let connection = try await connectionFuture(preferring: MultiThreadedEventLoopGroup.currentEventLoop).get()
        return try Self.answer(try await connection.unary(request.envelope, timeout: request.remaining))
    }

    /// The request of a call, with the client's metadata and the caller's remaining time.
    private func envelope(
        _ method: String, _ payload: [UInt8], _ metadata: RPCMetadata, _ deadline: ContinuousClock.Instant
    ) throws(RPCError) -> (envelope: Envelope, remaining: Duration) {
        let remaining = deadline - .now
        guard remaining > .zero else {
            throw RPCError(.deadlineExceeded, "the deadline of \(method) expired before it was sent")
        }
        return (Envelope(method: method, payload: payload, timeoutMicros: remaining.microseconds, metadata: merged(metadata).entries), remaining)
    }

    /// The payload of an answer, or its status as an error.
    private static func answer(_ reply: Envelope) throws(RPCError) -> [UInt8] {
        if let status = reply.status, status.code != .ok {
            throw RPCError.answered(status, metadata: RPCMetadata(reply.metadata))
        }
        return reply.payload
    }

    /// Calls a server-streaming method; the stream ends with the call, throwing its status
    /// if that is not OK. Ending iteration early cancels the call on the server.
    public func stream<Request, Response>(
        _ method: WireMethod<Request, Response>,
        _ request: Request,
        metadata: RPCMetadata = [:],
        timeout: Duration? = nil
    ) async throws -> AsyncThrowingMapSequence<AsyncThrowingStream<[UInt8], any Error>, Response> {
        let raw = try await streamRaw(method.name, payload: request.serializedBytes(), metadata: metadata, deadline: deadline(timeout))
        return raw.map { payload in
            do {
                return try Response(serializedBytes: payload)
            } catch {
                throw RPCError(.internal, "a message of \(method.name) does not decode as \(Response.protoName)")
            }
        }
    }

    public func streamRaw(
        _ method: String,
        payload: [UInt8],
        metadata: RPCMetadata,
        deadline: ContinuousClock.Instant
    ) async throws -> AsyncThrowingStream<[UInt8], any Error> {
        if let local { return local.stream(method, payload: payload, metadata: merged(metadata), deadline: deadline) }
        let request = try envelope(method, payload, metadata, deadline)
        let connection = try await connectionFuture(preferring: MultiThreadedEventLoopGroup.currentEventLoop).get()
        return connection.stream(request.envelope, timeout: request.remaining)
    }

    /// Closes every connection; calls in flight fail with `UNAVAILABLE`.
    public func close() async {
        for slot in slots {
            let state = slot.state.withLock { state in
                defer { state = .closed }
                return state
            }
            switch state {
            case .ready(let connection): try? await connection.channel.close()
            case .connecting(let future): try? await future.get().channel.close()
            case .idle, .closed: break
            }
        }
    }

    private func merged(_ metadata: RPCMetadata) -> RPCMetadata {
        guard !configuration.metadata.entries.isEmpty else { return metadata }
        var merged = configuration.metadata
        for entry in metadata.entries { merged[entry.key] = entry.value }
        return merged
    }

    private func deadline(_ timeout: Duration?) -> ContinuousClock.Instant {
        .now + (timeout ?? configuration.defaultTimeout)
    }

    // MARK: Connections

    /// A connection on `loop` when this client has one there, else the next in turn.
    private func connectionFuture(preferring loop: (any EventLoop)?) -> EventLoopFuture<ClientConnection> {
        let turn = nextSlot.add(1, ordering: .relaxed).oldValue
        let index: Int
        if let loop, let local = slotsByLoop[ObjectIdentifier(loop)] {
            index = local[turn % local.count]
        } else {
            index = turn % slots.count
        }
        let slot = slots[index]
        var started: EventLoopFuture<ClientConnection>?
        let future: EventLoopFuture<ClientConnection> = slot.state.withLock { state in
            switch state {
            case .ready(let connection) where connection.channel.isActive:
                return connection.channel.eventLoop.makeSucceededFuture(connection)
            case .connecting(let future):
                return future
            case .closed:
                return slotLoops[index].makeFailedFuture(RPCError(.unavailable, "the client for \(endpoint) is closed"))
            case .idle, .ready:
                let future = connect(on: slotLoops[index])
                state = .connecting(future)
                started = future
                return future
            }
        }
        // Registered outside the lock: a future that has already completed runs its
        // callback at once, and the callback takes the same lock.
        started?.whenComplete { result in
            slot.state.withLock { state in
                guard case .connecting = state else { return }
                switch result {
                case .success(let connection): state = .ready(connection)
                case .failure: state = .idle
                }
            }
        }
        return future
    }

    private func connect(on loop: any EventLoop) -> EventLoopFuture<ClientConnection> {
        Self.openChannel(to: endpoint, configuration: configuration, on: loop) { channel in
            try channel.pipeline.syncOperations.addHandler(CallDispatcher())
        }.flatMap { channel in
            channel.pipeline.handler(type: CallDispatcher.self).map { dispatcher in
                ClientConnection(channel: channel, calls: dispatcher.calls)
            }
        }.flatMapErrorThrowing { [endpoint] error in
            throw Self.connectFailure(endpoint, error)
        }
    }

    /// What a failed connect means for the person who reads it: which address was tried,
    /// and what to do.
    static func connectFailure(_ endpoint: Endpoint, _ error: any Error) -> RPCError {
        if let error = error as? RPCError { return error }
        var errnoCode: Int32?
        if let io = error as? IOError { errnoCode = io.errnoCode }
        if let connection = error as? NIOConnectionError {
            errnoCode = connection.connectionErrors.compactMap { ($0.error as? IOError)?.errnoCode }.first
        }
        switch errnoCode {
        case ENOENT?:
            return RPCError(.unavailable, "nothing listens at \(endpoint): the socket does not exist; is the service running? (deploy/up starts the stack)")
        case ECONNREFUSED?:
            return RPCError(.unavailable, "nothing listens at \(endpoint) (connection refused); is the service running? (deploy/up starts the stack)")
        case EACCES?:
            return RPCError(.unavailable, "no permission to connect to \(endpoint); run as the user (or group) that owns it")
        default:
            if case ChannelError.connectTimeout(let timeout) = error {
                return RPCError(.unavailable, "no answer from \(endpoint) within \(timeout.nanoseconds / 1_000_000) ms; is the address right and reachable?")
            }
            return RPCError(.unavailable, "cannot connect to \(endpoint): \(error)")
        }
    }

    /// Opens one connection with TLS (for TCP, when configured) and the framing installed,
    /// then `handlers` after them: for tools that speak the protocol directly, like
    /// license-bench's load connections.
    public static func openChannel(
        to endpoint: Endpoint, configuration: RPCClientConfiguration, on eventLoop: any EventLoop,
        handlers: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel> {
        let limits = configuration.limits
        var tls: (NIOSSLContext, String?)?
        if case .tcp(let host, _) = endpoint, let context = configuration.tls {
            // An IP address is not a valid SNI name; verification still checks it against the certificate.
            let name = configuration.serverHostname ?? host
            tls = (context, name.first?.isNumber == true || name.contains(":") ? nil : name)
        }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelInitializer { [tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let (context, hostname) = tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: hostname))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(promise: channel.eventLoop.makePromise()))
                    }
                    try channel.pipeline.syncOperations.addEnvelopeFraming(limits: limits)
                    try handlers(channel)
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch endpoint {
        case .unix(let path): connected = bootstrap.connect(unixDomainSocketPath: path)
        case .tcp(let host, let port): connected = bootstrap.connect(host: host, port: port)
        case .inProcess(let server):
            return eventLoop.makeFailedFuture(RPCError(.invalidArgument, "\(server.name) is an in-process server: call it through RPCClient"))
        }
        guard tls != nil else { return connected }
        // A TLS connection is ready once its handshake is done: a failed one fails the
        // connect, with the reason, before any call is sent on it.
        return connected.flatMap { channel in
            channel.pipeline.handler(type: TLSHandshakeWaiter.self).flatMap { waiter in
                waiter.promise.futureResult.map { channel }
            }.flatMapError { error in
                channel.close(promise: nil)
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
    }
}

extension Duration {
    /// Whole microseconds, held at Int64's ends rather than trapping for an absurd timeout.
    var microseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        let (total, overflowAgain) = whole.addingReportingOverflow(attoseconds / 1_000_000_000_000)
        return overflowAgain ? (whole < 0 ? .min : .max) : total
    }
}
