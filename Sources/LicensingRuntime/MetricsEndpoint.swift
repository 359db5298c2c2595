import Logging
import LicensingRPC
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// Serves `GET /metrics` in Prometheus text format on an opt-in HTTP port, and the probes
/// an orchestrator asks: `GET /healthz` (the process answers: alive) and `GET /readyz` (every
/// readiness check passes: 200, else 503 with what is not ready).
public final class MetricsEndpoint: Service, Sendable {
    /// What must hold for the service to take calls (its RPC server listening); added once
    /// the service's parts are made.
    public let readiness = ReadinessChecks()
    private let registry: PrometheusCollectorRegistry
    private let host: String
    private let port: Int
    private let logger: Logger
    private let listening: EventLoopPromise<Int>

    public init(registry: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger) {
        self.registry = registry
        self.host = host
        self.port = port
        self.logger = logger
        self.listening = MultiThreadedEventLoopGroup.singleton.any().makePromise()
    }

    /// The bound port (port 0 resolved), once listening.
    public var listeningPort: Int {
        get async throws { try await listening.futureResult.get() }
    }

    /// An endpoint made but never run (its service failed to start, say on an unknown
    /// setting) leaves no one waiting; a completed promise ignores this.
    deinit {
        listening.fail(RPCError(.unavailable, "the metrics endpoint was never started"))
    }

    public func run() async throws {
        let registry = self.registry
        let readiness = self.readiness
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(registry: registry, readiness: readiness))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            listening.fail(error)
            throw error
        }
        listening.succeed(server.localAddress?.port ?? port)
        logger.info("metrics endpoint listening", metadata: ["address": "\(server.localAddress?.description ?? "?")"])
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await server.closeFuture.get()
            } onCancel: {
                server.close(promise: nil)
            }
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
    }
}

private final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let readiness: ReadinessChecks

    init(registry: PrometheusCollectorRegistry, readiness: ReadinessChecks) {
        self.registry = registry
        self.readiness = readiness
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data) else { return }
        var body = context.channel.allocator.buffer(capacity: 4096)
        let status: HTTPResponseStatus
        if request.method == .GET, request.uri == "/metrics" {
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            body.writeString(MetricHelp.annotate(String(decoding: bytes, as: UTF8.self)))
            status = .ok
        } else if request.method == .GET, request.uri == "/healthz" {
            body.writeString("alive\n")
            status = .ok
        } else if request.method == .GET, request.uri == "/readyz" {
            let waiting = readiness.unmet()
            body.writeString(waiting.isEmpty ? "ready\n" : "not ready: \(waiting.joined(separator: "; "))\n")
            status = waiting.isEmpty ? .ok : .serviceUnavailable
        } else {
            body.writeString("GET /metrics, /healthz or /readyz\n")
            status = .notFound
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; version=0.0.4")
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Readiness checks, each a name and whether it holds now.
public final class ReadinessChecks: Sendable {
    private let checks = Mutex<[(name: String, holds: @Sendable () -> Bool)]>([])

    public init() {}

    public func add(_ name: String, _ holds: @escaping @Sendable () -> Bool) {
        checks.withLock { $0.append((name, holds)) }
    }

    /// The names of the checks that do not hold (all of them before any was added: a service
    /// still starting is not ready).
    public func unmet() -> [String] {
        let all = checks.withLock { $0 }
        guard !all.isEmpty else { return ["starting"] }
        return all.filter { !$0.holds() }.map(\.name)
    }
}
