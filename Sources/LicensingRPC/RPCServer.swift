#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LicensingWire
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

public struct RPCServerConfiguration: Sendable {
    public var endpoints: [Endpoint]
    public var limits: FrameLimits
    /// Applied when a request carries no deadline.
    public var defaultTimeout: Duration
    /// File mode of Unix-domain sockets: owner and group only.
    public var unixSocketMode: UInt32
    /// TLS for TCP endpoints (Unix sockets are protected by their file mode); nil = plaintext.
    public var tls: NIOSSLContext?
    /// On stopping, how long calls in flight get before their connections are closed.
    public var drainTimeout: Duration = .seconds(10)

    public init(
        endpoints: [Endpoint],
        limits: FrameLimits = FrameLimits(),
        defaultTimeout: Duration = .seconds(30),
        unixSocketMode: UInt32 = 0o660,
        tls: NIOSSLContext? = nil
    ) {
        self.endpoints = endpoints
        self.limits = limits
        self.defaultTimeout = defaultTimeout
        self.unixSocketMode = unixSocketMode
        self.tls = tls
    }
}

/// Serves an ``RPCRouter`` on Unix-domain sockets and TCP. Each connection carries many
/// calls at once, answered as they finish. Runs as a `Service`: on graceful shutdown it
/// stops accepting connections and calls, lets the calls in flight finish, then closes.
public final class RPCServer: Service, Sendable {
    private let core: ServerCore
    private let configuration: RPCServerConfiguration
    private let logger: Logger
    private let group: any EventLoopGroup
    private let listening: EventLoopPromise<[Endpoint]>
    private let connections = OpenConnections()

    public init(
        router: RPCRouter,
        configuration: RPCServerConfiguration,
        logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.core = ServerCore(router: router, limits: configuration.limits, defaultTimeout: configuration.defaultTimeout, logger: logger)
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.listening = group.any().makePromise()
    }

    /// A server made but never run (its service failed to start) leaves no one waiting.
    deinit {
        listening.fail(RPCError(.unavailable, "the server was never started"))
    }

    /// The endpoints once bound (a TCP port 0 resolved to the real port).
    public var listeningEndpoints: [Endpoint] {
        get async throws { try await listening.futureResult.get() }
    }

    public func run() async throws {
        var listeners: [(any Channel, Endpoint)] = []
        do {
            for endpoint in configuration.endpoints {
                do {
                    let channel = try await bind(endpoint)
                    listeners.append((channel, resolved(endpoint, channel.localAddress)))
                } catch {
                    throw Self.bindFailure(endpoint, error)
                }
            }
        } catch {
            for (listener, _) in listeners { try? await listener.close() }
            listening.fail(error)
            throw error
        }
        let endpoints = listeners.map(\.1)
        // Which socket files are ours, so that stopping never removes another process's.
        var ownSockets: [String: SocketFileIdentity] = [:]
        for case .unix(let path) in endpoints {
            var info = stat()
            if stat(path, &info) == 0 { ownSockets[path] = SocketFileIdentity(info) }
        }
        logger.info("listening", metadata: ["endpoints": "\(endpoints.map(\.description))"])
        listening.succeed(endpoints)

        let stop = StopSignal(group.any())
        for (listener, endpoint) in listeners {
            listener.closeFuture.whenComplete { [logger] _ in
                // A listener that closes on its own (not by stopping) stops the server too.
                logger.debug("listener closed", metadata: ["endpoint": "\(endpoint)"])
                stop.signal()
            }
        }
        await withTaskCancellationOrGracefulShutdownHandler {
            await stop.wait()
        } onCancelOrGracefulShutdown: {
            stop.signal()
        }
        // No new connections from here on; those open finish their calls, then close.
        for (listener, endpoint) in listeners {
            try? await listener.close()
            if case .unix(let path) = endpoint { Self.removeSocket(path, created: ownSockets[path]) }
        }
        await connections.drainAll(within: configuration.drainTimeout)
        logger.info("stopped")
    }

    private func bind(_ endpoint: Endpoint) async throws -> any Channel {
        let limits = configuration.limits
        var tls: NIOSSLContext?
        if case .tcp = endpoint { tls = configuration.tls }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [core, connections, tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.addEnvelopeFraming(limits: limits)
                    let handler = RPCConnectionHandler(core: core, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    connections.opened(channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
        switch endpoint {
        case .unix(let path):
            let channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            chmod(path, mode_t(configuration.unixSocketMode))
            return channel
        case .tcp(let host, let port):
            return try await bootstrap.bind(host: host, port: port).get()
        }
    }

    /// Why a listener could not start, naming the address.
    static func bindFailure(_ endpoint: Endpoint, _ error: any Error) -> RPCError {
        switch (error as? IOError)?.errnoCode {
        case EADDRINUSE?:
            return RPCError(.unavailable, "cannot listen on \(endpoint): the address is already in use by another process (choose another with --listen)")
        case EACCES?:
            return RPCError(.unavailable, "cannot listen on \(endpoint): permission denied")
        case EADDRNOTAVAIL?:
            return RPCError(.unavailable, "cannot listen on \(endpoint): this machine has no such address")
        case ENOENT?:
            return RPCError(.unavailable, "cannot listen on \(endpoint): its folder does not exist")
        default:
            return RPCError(.unavailable, "cannot listen on \(endpoint): \(error)")
        }
    }

    /// Removes a Unix socket file if it is still the one this server created: a new
    /// process may already have bound the same path.
    private static func removeSocket(_ path: String, created: SocketFileIdentity?) {
        var info = stat()
        guard let created, stat(path, &info) == 0, SocketFileIdentity(info) == created else { return }
        unlink(path)
    }

    private func resolved(_ endpoint: Endpoint, _ address: SocketAddress?) -> Endpoint {
        if case .tcp(let host, _) = endpoint, let port = address?.port {
            return .tcp(host: host, port: port)
        }
        return endpoint
    }
}

/// What every connection of a server shares.
final class ServerCore: Sendable {
    let router: RPCRouter
    let limits: FrameLimits
    let defaultTimeout: Duration
    let logger: Logger
    let metrics: RPCServerMetrics
    /// Calls one connection may have in flight; beyond it the server stops reading from
    /// that connection until some finish.
    let maxCallsPerConnection = 1024

    init(router: RPCRouter, limits: FrameLimits, defaultTimeout: Duration, logger: Logger) {
        self.router = router
        self.metrics = RPCServerMetrics(methods: router.registeredMethods)
        self.limits = limits
        self.defaultTimeout = defaultTimeout
        self.logger = logger
    }

    func reply(_ callID: UInt64, _ kind: FrameKind, _ error: RPCError?) -> Envelope {
        var envelope = Envelope(callId: callID, kind: kind, status: error?.boundedStatus ?? Status(code: .ok))
        if let error { envelope.metadata = error.metadata.entries }
        return envelope
    }

    func status(for error: any Error, method: String) -> RPCError {
        switch error {
        case let error as RPCError:
            return error
        case is CancellationError:
            return RPCError(.cancelled, "\(method) was cancelled")
        default:
            // Internal details stay in the log; the caller learns only that it failed.
            logger.error("call failed", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(.internal, "\(method) failed inside the server; see the server log")
        }
    }

    /// An answer too large for a frame would make the peer drop the whole connection,
    /// failing every call on it; it fails only its own call instead.
    func oversized(_ envelope: Envelope, method: String) -> RPCError? {
        let limit = limits.maxFrameLength
        // An answer's envelope adds a few dozen bytes to its payload: measure only near the limit.
        guard envelope.payload.count > limit - 64, envelope.serializedSize > limit else { return nil }
        return RPCError(.resourceExhausted, "an answer of \(method) (\(envelope.payload.count) bytes) exceeds the frame limit of \(limit) bytes")
    }
}

/// The calls of one connection, handled on the connection's event loop. A call whose
/// handler is immediate is answered inside the read, and the answers of one read go out in
/// one flush; other calls run as tasks on the same loop, so reading, handling and
/// answering involve no hop between threads.
final class RPCConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundIn = Envelope
    typealias OutboundOut = Envelope

    /// A unary call runs to its end once started; a feed can be stopped.
    private enum CallState {
        case unary
        case stream(Task<Void, Never>)
    }

    private let core: ServerCore
    private let executor: EventLoopTaskExecutor
    private var context: ChannelHandlerContext?
    private var frameReader: FrameReader?
    private var peer = "unix"
    private var localUser: String?
    private var calls: [UInt64: CallState] = [:]
    /// Requests read while the connection had its fill of calls in flight (one read can
    /// carry many frames); reading stays held until they have started.
    private var waiting = CircularBuffer<(request: Envelope, arrived: ContinuousClock.Instant)>()
    private var startingWaiting = false
    private var readHeld = false
    private var flushPending = false
    private var reading = false
    /// Set on graceful shutdown, or after a frame that is not an envelope: no new calls;
    /// the connection closes once those in flight have answered.
    private var draining = false
    private var closing = false

    init(core: ServerCore, eventLoop: any EventLoop) {
        self.core = core
        self.executor = EventLoopTaskExecutor(eventLoop)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        frameReader = try? context.pipeline.syncOperations.handler(type: FrameReader.self)
    }

    func channelActive(context: ChannelHandlerContext) {
        // Who calls, for limits on failed authentication: the address of a TCP caller; the
        // user and process of a local one (every Unix-socket caller has the same address).
        peer = context.channel.remoteAddress?.ipAddress ?? Self.localPeer(context.channel)
        if peer.hasPrefix("unix:uid=") { localUser = peer.split(separator: ":").prefix(2).joined(separator: ":") }
        context.fireChannelActive()
    }

    /// Linux's `struct ucred` (which Glibc's module map hides behind _GNU_SOURCE): three
    /// 32-bit fields in this order, as getsockopt(SO_PEERCRED) fills them.
    private struct PeerCredentials: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// `unix:uid=1000:pid=4242` from the socket's peer credentials (SO_PEERCRED), read on
    /// the channel's own loop, where the option is answered at once.
    private static func localPeer(_ channel: any Channel) -> String {
        guard let provider = channel as? any SocketOptionProvider else { return "unix" }
        let peer = NIOLockedValueBox("unix")
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: .init(rawValue: SOL_SOCKET), name: .init(rawValue: SO_PEERCRED))
        credentials.whenSuccess { credentials in
            peer.withLockedValue { $0 = "unix:uid=\(credentials.uid):pid=\(credentials.pid)" }
        }
        return peer.withLockedValue { $0 }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        switch unwrapInboundIn(data) {
        case .undecodable(let error):
            guard !draining else { return }
            // The call id is unknown, so no call can be answered: say why, then close.
            send(core.reply(0, .response, RPCError(.invalidArgument, "\(error)")))
            drain()
        case .envelope(let envelope):
            switch envelope.kind {
            case .request:
                if calls.count >= core.maxCallsPerConnection || !waiting.isEmpty {
                    waiting.append((envelope, ContinuousClock.now))
                } else {
                    start(envelope, arrived: ContinuousClock.now)
                }
            case .cancel:
                cancel(envelope.callId)
            default:
                let error = RPCError(.invalidArgument, "a client may send only REQUEST and CANCEL frames, not \(envelope.kind)")
                send(core.reply(envelope.callId, .response, error))
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    /// Holds reading while the connection has its fill of calls in flight or its peer is
    /// not taking answers: the server's memory stays bounded however fast a client sends.
    func read(context: ChannelHandlerContext) {
        if calls.count >= core.maxCallsPerConnection || !waiting.isEmpty || !context.channel.isWritable {
            readHeld = true
            frameReader?.pauseStallClock()
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReading()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The caller is gone: feeds end; unary calls running finish (their answers go
        // nowhere); calls not started never start — the caller has been told they failed.
        draining = true
        waiting.removeAll()
        for case .stream(let task) in calls.values { task.cancel() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            // A client that cannot complete the handshake (untrusted CA, plaintext, wrong certificate).
            core.logger.notice("TLS handshake failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        } else {
            core.logger.debug("connection closed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Graceful shutdown: feeds end, calls in flight answer, then the connection closes.
    func drain() {
        draining = true
        for case .stream(let task) in calls.values { task.cancel() }
        closeIfDrained()
    }

    // MARK: Calls

    /// `arrived`: when the request was read; a call that waited for room is timed from then.
    private func start(_ request: Envelope, arrived started: ContinuousClock.Instant) {
        let id = request.callId
        let method = request.method
        guard !draining else {
            return send(core.reply(id, .response, RPCError(.unavailable, "the server is stopping; retry on another instance or later")))
        }
        guard calls[id] == nil else {
            // Answering under that id would reach the caller as the first call's answer: the
            // peer is told on call id 0, like any frame that breaks the protocol, and the
            // connection closes once the calls in flight have answered.
            send(core.reply(0, .response, RPCError(.invalidArgument, "call id \(id) is already in flight on this connection")))
            return drain()
        }
        guard request.timeoutMicros >= 0 else {
            return finish(id, method, started, .response, error: RPCError(.deadlineExceeded, "the deadline of \(method) expired before it reached the server"))
        }
        guard let handler = core.router.handler(for: method) else {
            return finish(id, method, started, .response, error: .unimplemented(method))
        }
        // A caller's budget beyond a day is a day: no deadline arithmetic downstream can overflow.
        let timeout = request.timeoutMicros == 0 ? core.defaultTimeout : .microseconds(min(request.timeoutMicros, 86_400_000_000))
        let deadline = started + timeout
        let call = ServerCall(
            method: method, payload: request.payload, metadata: RPCMetadata(request.metadata), deadline: deadline, logger: core.logger,
            peer: peer, localUser: localUser, eventLoop: executor.eventLoop)

        switch handler {
        case .immediate(let body):
            let reply: ImmediateReply
            do {
                reply = try body(call)
            } catch {
                return finish(id, method, started, .response, error: core.status(for: error, method: method))
            }
            switch reply {
            case .answer(let payload):
                finishUnary(id, method, started, deadline, .success(payload))
            case .later(let work):
                runUnary(id, method, started, deadline, work)
            case .future(let future):
                calls[id] = .unary
                let handler = NIOLoopBound(self, eventLoop: executor.eventLoop)
                future.hop(to: executor.eventLoop).whenComplete { result in
                    handler.value.finishUnary(id, method, started, deadline, result)
                }
            }
        case .unary(let body):
            runUnary(id, method, started, deadline) { try await body(call) }
        case .serverStreaming(let body):
            runStream(id, method, started, call, body)
        }
    }

    private func runUnary(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ deadline: ContinuousClock.Instant,
        _ work: @escaping @Sendable () async throws -> [UInt8]
    ) {
        calls[id] = .unary
        let loop = executor.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        Task(executorPreference: executor) {
            let result: Result<[UInt8], any Error>
            do {
                result = .success(try await work())
            } catch {
                result = .failure(error)
            }
            loop.onLoop { handler.value.finishUnary(id, method, started, deadline, result) }
        }
    }

    private func runStream(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ call: ServerCall,
        _ body: @escaping @Sendable (ServerCall, ResponseStream) async throws -> Void
    ) {
        guard let channel = context?.channel else { return }
        let core = self.core
        let stream = ResponseStream { payload in
            try Task.checkCancellation()
            let message = Envelope(callId: id, kind: .streamMessage, payload: payload)
            if let tooLarge = core.oversized(message, method: method) { throw tooLarge }
            // Written from the loop, in order with STREAM_END, which follows the last of them.
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(message, promise: written)
            try await withTaskCancellationHandler {
                try await written.futureResult.get()
            } onCancel: {
                // A feed cancelled while its peer takes nothing more would wait for this
                // write forever (and hold up stopping): if it has not gone out within a
                // grace period, the peer loses the connection.
                channel.eventLoop.execute {
                    let grace = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
                    written.futureResult.whenComplete { _ in grace.cancel() }
                }
            }
        }
        let loop = executor.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        // The task starts on this loop after this returns, so it is registered before it can finish.
        calls[id] = .stream(Task(executorPreference: executor) {
            var failure: RPCError?
            do {
                try await body(call, stream)
            } catch {
                failure = core.status(for: error, method: method)
            }
            loop.onLoop { [failure] in handler.value.finish(id, method, started, .streamEnd, error: failure) }
        })
    }

    private func finishUnary(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ deadline: ContinuousClock.Instant, _ result: Result<[UInt8], any Error>
    ) {
        switch result {
        case .success(let payload):
            if ContinuousClock.now > deadline {
                finish(id, method, started, .response, error: RPCError(.deadlineExceeded, "\(method) finished after its deadline"))
            } else {
                finish(id, method, started, .response, payload: payload)
            }
        case .failure(let error):
            finish(id, method, started, .response, error: core.status(for: error, method: method))
        }
    }

    private func finish(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ kind: FrameKind, payload: [UInt8] = [], error: RPCError? = nil
    ) {
        calls.removeValue(forKey: id)
        var reply = core.reply(id, kind, error)
        reply.payload = payload
        var code = error?.code ?? .ok
        if let tooLarge = core.oversized(reply, method: method) {
            reply = core.reply(id, kind, tooLarge)
            code = tooLarge.code
        }
        core.metrics.record(method: method, code: code, duration: ContinuousClock.now - started)
        send(reply)
        startWaiting()
        resumeReading()
        closeIfDrained()
    }

    /// Starts the requests that waited for room, oldest first. A call that finishes at once
    /// comes back here; the flag keeps that from recursing.
    private func startWaiting() {
        guard !startingWaiting else { return }
        startingWaiting = true
        defer { startingWaiting = false }
        while calls.count < core.maxCallsPerConnection, let next = waiting.popFirst() {
            start(next.request, arrived: next.arrived)
        }
    }

    /// Answers written while a read is being handled go out together at its end.
    private func send(_ envelope: Envelope) {
        guard let context else { return }
        if reading {
            context.write(wrapOutboundOut(envelope), promise: nil)
            flushPending = true
        } else {
            context.writeAndFlush(wrapOutboundOut(envelope), promise: nil)
        }
    }

    private func cancel(_ id: UInt64) {
        // A call that has not started never will; its caller has stopped waiting.
        if let index = waiting.firstIndex(where: { $0.request.callId == id }) {
            waiting.remove(at: index)
            return resumeReading()
        }
        // Unary calls run to the end (a mutation half done is worse than an unwanted answer); feeds stop.
        if case .stream(let task) = calls[id] { task.cancel() }
    }

    private func resumeReading() {
        guard readHeld, let context, calls.count < core.maxCallsPerConnection, waiting.isEmpty, context.channel.isWritable else { return }
        readHeld = false
        frameReader?.resumeStallClock()
        context.read()
    }

    private func closeIfDrained() {
        guard draining, !closing, calls.isEmpty, waiting.isEmpty, let context else { return }
        closing = true
        if flushPending {
            flushPending = false
            context.flush()
        }
        // Output first: that close waits for the answers still queued for the socket, which
        // a full close would drop; then the rest.
        let channel = context.channel
        let outputClosed = context.eventLoop.makePromise(of: Void.self)
        outputClosed.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.close(mode: .output, promise: outputClosed)
    }
}

extension EventLoop {
    /// Runs `body` now when already on this loop, else on it soon.
    func onLoop(_ body: @escaping @Sendable () -> Void) {
        if inEventLoop { body() } else { execute(body) }
    }
}

/// Completes once, however many times it is signalled.
final class StopSignal: Sendable {
    private let promise: EventLoopPromise<Void>
    private let signalled = NIOLockedValueBox(false)

    init(_ eventLoop: any EventLoop) {
        promise = eventLoop.makePromise()
    }

    func signal() {
        let first = signalled.withLockedValue { signalled in
            defer { signalled = true }
            return !signalled
        }
        if first { promise.succeed(()) }
    }

    func wait() async {
        try? await promise.futureResult.get()
    }
}

/// The server's open connections, so that stopping can drain each and wait for it.
final class OpenConnections: Sendable {
    private let state = NIOLockedValueBox<(stopping: Bool, open: [ObjectIdentifier: (any Channel, NIOLoopBound<RPCConnectionHandler>)])>((false, [:]))
    private let gauge = Meter(label: "rpc_server_open_connections")

    func opened(_ channel: any Channel, handler: NIOLoopBound<RPCConnectionHandler>) {
        let id = ObjectIdentifier(channel)
        let stopping = state.withLockedValue { state in
            if !state.stopping { state.open[id] = (channel, handler) }
            return state.stopping
        }
        if stopping {
            channel.close(promise: nil)
            return
        }
        gauge.increment()
        channel.closeFuture.whenComplete { [state, gauge] _ in
            _ = state.withLockedValue { $0.open.removeValue(forKey: id) }
            gauge.decrement()
        }
    }

    /// Drains every connection and returns when all have closed. A connection still open
    /// after `limit` (a handler that does not return, a peer that reads nothing) is closed.
    func drainAll(within limit: Duration) async {
        let open = state.withLockedValue { state in
            state.stopping = true
            return Array(state.open.values)
        }
        for (channel, handler) in open {
            channel.eventLoop.execute { handler.value.drain() }
            let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(limit)) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { _ in deadline.cancel() }
        }
        for (channel, _) in open {
            try? await channel.closeFuture.get()
        }
    }
}

/// Which file a socket path names. The inode number alone is not enough: a file system
/// hands a freed inode to the next file, so the change time is compared as well.
private struct SocketFileIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let changedSeconds: Int
    let changedNanoseconds: Int

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        changedSeconds = Int(info.st_ctim.tv_sec)
        changedNanoseconds = Int(info.st_ctim.tv_nsec)
    }
}
