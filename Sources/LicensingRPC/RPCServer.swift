#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LicensingWire
import Logging
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
    private let router: RPCRouter
    private let configuration: RPCServerConfiguration
    private let logger: Logger
    private let group: any EventLoopGroup
    private let listening: EventLoopPromise<[Endpoint]>
    private let metrics = RPCServerMetrics()

    public init(
        router: RPCRouter,
        configuration: RPCServerConfiguration,
        logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.router = router
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.listening = group.any().makePromise()
    }

    /// The endpoints once bound (a TCP port 0 resolved to the real port).
    public var listeningEndpoints: [Endpoint] {
        get async throws { try await listening.futureResult.get() }
    }

    public func run() async throws {
        typealias Connection = NIOAsyncChannel<InboundFrame, Envelope>
        var listeners: [(NIOAsyncChannel<Connection, Never>, Endpoint)] = []
        do {
            for endpoint in configuration.endpoints {
                let channel = try await bind(endpoint)
                listeners.append((channel, resolved(endpoint, channel.channel.localAddress)))
            }
        } catch {
            for (listener, _) in listeners { try? await listener.channel.close() }
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
        let socketFiles = ownSockets
        logger.info("listening", metadata: ["endpoints": "\(endpoints.map(\.description))"])
        listening.succeed(endpoints)

        await withDiscardingTaskGroup { perListener in
            for (listener, endpoint) in listeners {
                perListener.addTask {
                    await withDiscardingTaskGroup { connections in
                        do {
                            try await listener.executeThenClose { inbound in
                                for try await connection in inbound.cancelOnGracefulShutdown() {
                                    connections.addTask { await self.serve(connection) }
                                }
                            }
                        } catch {
                            self.logger.error("listener failed", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                        }
                        // No new connections from here on; those open drain in this group.
                        if case .unix(let path) = endpoint { Self.removeSocket(path, created: socketFiles[path]) }
                    }
                }
            }
        }
        logger.info("stopped")
    }

    private func bind(_ endpoint: Endpoint) async throws -> NIOAsyncChannel<NIOAsyncChannel<InboundFrame, Envelope>, Never> {
        let limits = configuration.limits
        var tls: NIOSSLContext?
        if case .tcp = endpoint { tls = configuration.tls }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        let initializer: @Sendable (Channel) -> EventLoopFuture<NIOAsyncChannel<InboundFrame, Envelope>> = { [tls] channel in
            channel.eventLoop.makeCompletedFuture {
                if let tls {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                }
                try channel.pipeline.syncOperations.addEnvelopeFraming(limits: limits)
                return try NIOAsyncChannel(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(inboundType: InboundFrame.self, outboundType: Envelope.self)
                )
            }
        }
        switch endpoint {
        case .unix(let path):
            let channel = try await bootstrap.bind(
                unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: initializer)
            chmod(path, mode_t(configuration.unixSocketMode))
            return channel
        case .tcp(let host, let port):
            return try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
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

    // MARK: Connections

    private func serve(_ connection: NIOAsyncChannel<InboundFrame, Envelope>) async {
        let executor = EventLoopTaskExecutor(connection.channel.eventLoop)
        await withTaskExecutorPreference(executor) {
            await self.serveOnEventLoop(connection, executor)
        }
    }

    private func serveOnEventLoop(_ connection: NIOAsyncChannel<InboundFrame, Envelope>, _ executor: EventLoopTaskExecutor) async {
        // The caller's address, for limits on failed authentication; all local Unix callers share one.
        let peer = connection.channel.remoteAddress?.ipAddress ?? "unix"
        do {
            try await connection.executeThenClose { inbound, outbound in
                let streams = StreamCalls()
                await withDiscardingTaskGroup { calls in
                    do {
                        frames: for try await frame in inbound.cancelOnGracefulShutdown() {
                            switch frame {
                            case .undecodable(let error):
                                // The call id is unknown, so no call can be answered: say why, then close.
                                try? await outbound.write(Self.reply(0, .response, RPCError(.invalidArgument, "\(error)")))
                                break frames
                            case .envelope(let envelope):
                                switch envelope.kind {
                                case .request:
                                    // Known from now on, so a CANCEL read before the call starts still stops it.
                                    streams.open(envelope.callId)
                                    calls.addTask { await self.dispatch(envelope, peer: peer, outbound: outbound, streams: streams, executor: executor) }
                                case .cancel:
                                    streams.cancel(envelope.callId)
                                default:
                                    let error = RPCError(.invalidArgument, "a client may send only REQUEST and CANCEL frames, not \(envelope.kind)")
                                    try? await outbound.write(Self.reply(envelope.callId, .response, error))
                                }
                            }
                        }
                    } catch {
                        self.logger.debug("connection closed", metadata: ["peer": "\(peer)", "error": "\(error)"])
                    }
                    // The caller is gone or the server is stopping: unary calls finish, feeds end.
                    streams.cancelAll()
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
    }

    private func dispatch(
        _ request: Envelope, peer: String, outbound: NIOAsyncChannelOutboundWriter<Envelope>, streams: StreamCalls, executor: EventLoopTaskExecutor
    ) async {
        let start = ContinuousClock.now
        let callID = request.callId
        let method = request.method
        defer { streams.remove(callID) }
        let maxFrameLength = configuration.limits.maxFrameLength
        /// An answer too large for a frame would make the peer drop the whole connection,
        /// failing every call on it; it fails only its own call instead.
        @Sendable func oversized(_ envelope: Envelope) -> RPCError? {
            // An answer's envelope adds a few dozen bytes to its payload: measure only near the limit.
            guard envelope.payload.count > maxFrameLength - 64, envelope.serializedSize > maxFrameLength else { return nil }
            return RPCError(.resourceExhausted, "an answer of \(method) (\(envelope.payload.count) bytes) exceeds the frame limit of \(maxFrameLength) bytes")
        }
        func finish(_ kind: FrameKind, _ payload: [UInt8] = [], _ error: RPCError? = nil) async {
            var reply = Self.reply(callID, kind, error)
            reply.payload = payload
            if let error { reply.metadata = error.metadata.entries }
            var code = error?.code ?? .ok
            if let tooLarge = oversized(reply) {
                reply = Self.reply(callID, kind, tooLarge)
                code = tooLarge.code
            }
            metrics.record(method: method, code: code, duration: ContinuousClock.now - start)
            try? await outbound.write(reply)
        }

        guard request.timeoutMicros >= 0 else {
            return await finish(.response, [], RPCError(.deadlineExceeded, "the deadline of \(method) expired before it reached the server"))
        }
        guard let handler = router.handler(for: method) else {
            return await finish(.response, [], .unimplemented(method))
        }
        let timeout = request.timeoutMicros == 0 ? configuration.defaultTimeout : .microseconds(request.timeoutMicros)
        let deadline = start + timeout
        var logger = self.logger
        logger[metadataKey: "method"] = "\(method)"
        if let trace = request.metadata.first(where: { $0.key == RPCMetadata.traceID }) {
            logger[metadataKey: "trace"] = "\(trace.value)"
        }
        let call = ServerCall(
            method: method, payload: request.payload, metadata: RPCMetadata(request.metadata), deadline: deadline, logger: logger, peer: peer)

        switch handler {
        case .unary(let body):
            do {
                let payload = try await body(call)
                if ContinuousClock.now > deadline {
                    await finish(.response, [], RPCError(.deadlineExceeded, "\(method) finished after its deadline"))
                } else {
                    await finish(.response, payload)
                }
            } catch {
                await finish(.response, [], Self.status(for: error, method: method, logger: logger))
            }
        case .serverStreaming(let body):
            let stream = ResponseStream { payload in
                let message = Envelope(callId: callID, kind: .streamMessage, payload: payload)
                if let tooLarge = oversized(message) { throw tooLarge }
                try await outbound.write(message)
            }
            // On the connection's event loop like every other write of the connection: the
            // writer sends at once from the loop and hops from elsewhere, so mixing the two
            // could put STREAM_END before the messages.
            let task = Task(executorPreference: executor) { try await body(call, stream) }
            streams.start(callID, task)
            let result = await task.result
            switch result {
            case .success: await finish(.streamEnd)
            case .failure(let error): await finish(.streamEnd, [], Self.status(for: error, method: method, logger: logger))
            }
        }
    }

    private static func reply(_ callID: UInt64, _ kind: FrameKind, _ error: RPCError?) -> Envelope {
        Envelope(callId: callID, kind: kind, status: error?.status ?? Status(code: .ok))
    }

    private static func status(for error: any Error, method: String, logger: Logger) -> RPCError {
        switch error {
        case let error as RPCError:
            return error
        case is CancellationError:
            return RPCError(.cancelled, "\(method) was cancelled")
        default:
            // Internal details stay in the log; the caller learns only that it failed.
            logger.error("call failed", metadata: ["error": "\(error)"])
            return RPCError(.internal, "\(method) failed inside the server; see the server log")
        }
    }
}

/// The calls of one connection, so that a CANCEL frame or the end of the connection can
/// stop the server-streaming ones. A call is entered when its REQUEST is read, before its
/// task runs, so that a CANCEL arriving right behind the REQUEST is not lost.
private final class StreamCalls: Sendable {
    private enum Entry {
        /// Read but not started (or unary); `cancelled` if a CANCEL came meanwhile.
        case pending(cancelled: Bool)
        case running(Task<Void, any Error>)
    }

    private let entries = NIOLockedValueBox<[UInt64: Entry]>([:])

    func open(_ id: UInt64) {
        entries.withLockedValue { $0[id] = .pending(cancelled: false) }
    }

    /// Attaches a streaming call's task; cancels it at once if a CANCEL already came.
    func start(_ id: UInt64, _ task: Task<Void, any Error>) {
        let cancelled = entries.withLockedValue { entries in
            defer { entries[id] = .running(task) }
            if case .pending(cancelled: true) = entries[id] { return true }
            return false
        }
        if cancelled { task.cancel() }
    }

    func remove(_ id: UInt64) {
        _ = entries.withLockedValue { $0.removeValue(forKey: id) }
    }

    func cancel(_ id: UInt64) {
        let task: Task<Void, any Error>? = entries.withLockedValue { entries in
            switch entries[id] {
            case .running(let task): return task
            case .pending: entries[id] = .pending(cancelled: true)
            case nil: break
            }
            return nil
        }
        task?.cancel()
    }

    func cancelAll() {
        let tasks: [Task<Void, any Error>] = entries.withLockedValue { entries in
            var running: [Task<Void, any Error>] = []
            for (id, entry) in entries {
                switch entry {
                case .running(let task): running.append(task)
                case .pending: entries[id] = .pending(cancelled: true)
                }
            }
            return running
        }
        for task in tasks { task.cancel() }
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
