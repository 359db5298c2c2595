import Logging
import LicensingRPC
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// Serves `GET /metrics` in Prometheus text format on an opt-in HTTP port.
public final class MetricsEndpoint: Service, Sendable {
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
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(registry: registry))
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

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
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
        } else {
            body.writeString("only GET /metrics is served here\n")
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
