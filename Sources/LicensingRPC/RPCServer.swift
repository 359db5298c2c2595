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
import Synchronization

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
    private let serving = Atomic<Bool>(false)

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

    /// Whether it is listening and takes calls (readiness probes ask this): false before its
    /// listeners are bound and from the start of a shutdown.
    public var isServing: Bool { serving.load(ordering: .relaxed) }

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
        serving.store(true, ordering: .relaxed)

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
        serving.store(false, ordering: .relaxed)
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
        case .inProcess(let server):
            throw RPCError(.invalidArgument, "\(server.name) is an in-process server: it has no address to listen on")
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

/// Which file a socket path names. The inode number alone is not enough: a file system
/// hands a freed inode to the next file, so the change time is compared as well.
struct SocketFileIdentity: Equatable, Sendable {
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
