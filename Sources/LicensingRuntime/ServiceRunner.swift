import Foundation
import GRDB
import LicensingRPC
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

/// What a service library gets from its executable: settings, a logger, and where to
/// serve. Tests build one directly to start a service in-process.
public struct ServiceEnvironment: Sendable {
    public var name: String
    public var settings: Settings
    public var logger: Logger
    public var developmentMode: Bool
    /// Periodic figures for the metrics endpoint (nil when metrics are off): a service adds
    /// what an operator alerts on (licenses by state, seats in use).
    public var sampler: MetricsSampler?
    /// What `/readyz` waits for (nil when metrics are off): a service adds its own conditions,
    /// as a read replica does until it has copied its sources.
    public var readiness: ReadinessChecks?

    public init(name: String, settings: Settings, logger: Logger, developmentMode: Bool, sampler: MetricsSampler? = nil) {
        self.name = name
        self.settings = settings
        self.logger = logger
        self.developmentMode = developmentMode
        self.sampler = sampler
    }

    /// Where and how to serve: `listen`, frame limits, and TLS for TCP listeners from
    /// `tls-cert` and `tls-key` (PEM files), with `tls-client-ca` requiring client
    /// certificates (mutual TLS between the gateway and the services).
    public var serverConfiguration: RPCServerConfiguration {
        get throws {
            var configuration = RPCServerConfiguration(
                endpoints: try settings.endpoints("listen", default: [settings.defaultSocket(name)]),
                limits: FrameLimits(
                    maxFrameLength: try settings.int("max-frame-bytes", default: 4 << 20, in: 1024...(64 << 20)),
                    partialFrameTimeout: .seconds(Int64(try settings.int("read-timeout-seconds", default: 10, in: 1...3600)))))
            if let certificate = settings["tls-cert"], let key = settings["tls-key"] {
                configuration.tls = try RPCTLS.server(certificateChain: certificate, privateKey: key, clientCA: settings["tls-client-ca"])
            }
            return configuration
        }
    }

    /// The service's database file: `<data>/<service>.sqlite` unless `database` is set.
    public var databasePath: String {
        settings["database"] ?? "\(settings.dataDirectory)/\(name).sqlite"
    }
}

/// The one shape of a service: its name (which names its database, socket and logs) and what
/// it runs from its environment. Its library conforms; its executable only parses flags and
/// calls ``ServiceRunner/run(_:options:extraFlags:)``.
public protocol LicenseManagerService {
    /// "issuance", "validation", ...
    static var name: String { get }
    /// The versioned schema of its database (nil for a service that keeps none); the runner
    /// applies it alone with `--migrate`.
    static var databaseSchema: DatabaseMigrator? { get }
    /// The parts the process runs (the RPC server, feeds, schedulers, checkpoints), in the
    /// order they start; they stop in reverse.
    static func services(_ environment: ServiceEnvironment) async throws -> [any Service]
}

/// Runs a service process: logging and metrics set up once, the service's parts in a
/// `ServiceGroup` that turns SIGTERM and SIGINT into a graceful shutdown.
public enum ServiceRunner {
    /// Runs a service of the one shape.
    public static func run<S: LicenseManagerService>(_ service: S.Type, options: RuntimeOptions, extraFlags: [String: String?] = [:]) async throws {
        if options.migrate {
            let settings = try Settings.load(flags: options.flags.merging(extraFlags) { $1 }, configFile: options.config)
            for line in try migrate(S.self, settings: settings) { print(line) }
            return
        }
        try await run(name: S.name, options: options, extraFlags: extraFlags) { try await S.services($0) }
    }

    public static func run(
        name: String,
        options: RuntimeOptions,
        extraFlags: [String: String?] = [:],
        makeServices: (ServiceEnvironment) async throws -> [any Service]
    ) async throws {
        let settings = try Settings.load(flags: options.flags.merging(extraFlags) { $1 }, configFile: options.config)
        let level = Logger.Level(rawValue: settings.string("log-level", default: "info")) ?? .info
        // Event-loop threads (default: one per core), set before anything starts them.
        let eventLoops = try settings.int("event-loops", default: System.coreCount)
        guard (1...256).contains(eventLoops) else {
            throw RPCError.invalidArgument("event-loops must be between 1 and 256, not \(eventLoops)")
        }
        NIOSingletons.groupLoopCountSuggestion = eventLoops
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "license-\(name)")
        logger[metadataKey: "service"] = "\(name)"

        var services: [any Service] = []
        var metricsEndpoint: MetricsEndpoint?
        if let metrics = settings["metrics"] {
            let endpoint = try Endpoint(parsing: metrics)
            guard case .tcp(let host, let port) = endpoint else {
                throw RPCError.invalidArgument("metrics must be host:port, not \(metrics)")
            }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let served = MetricsEndpoint(registry: registry, host: host, port: port, logger: logger)
            metricsEndpoint = served
            services.append(served)
        }
        // Databases hold customer data and key hashes: files this process creates are the
        // owner's alone (0600), and so is the data folder (0700).
        umask(0o077)
        try FileManager.default.createDirectory(
            atPath: "\(settings.dataDirectory)/run", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let lock = try DataFolderLock(service: name, folder: settings.dataDirectory)
        defer { withExtendedLifetime(lock) {} }
        var environment = ServiceEnvironment(
            name: name, settings: settings, logger: logger,
            developmentMode: try settings.bool("dev", default: false))
        if settings["metrics"] != nil {
            environment.sampler = MetricsSampler(databasePath: environment.databasePath, service: name, logger: logger)
        }
        environment.readiness = metricsEndpoint?.readiness
        // A start that fails must not leave a half-made database behind.
        let database = environment.databasePath
        let databaseExisted = FileManager.default.fileExists(atPath: database)
        do {
            services += try await makeServices(environment)
            // Ready when its RPC server listens; a service without one (the console) once made.
            let servers = services.compactMap { $0 as? RPCServer }
            for server in servers { metricsEndpoint?.readiness.add("RPC server not listening") { server.isServing } }
            if servers.isEmpty { metricsEndpoint?.readiness.add("started") { true } }
            try settings.checkNoUnknownKeys()
            if let sampler = environment.sampler { services.append(sampler) }
        } catch {
            if !databaseExisted {
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: database + suffix) }
            }
            throw error
        }

        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }

    /// Applies the service's schema to its database without starting it, and says what it
    /// did: operators run it as the step before a new version starts (a Kubernetes init
    /// container, an `ExecStartPre`). Refused while the service runs (the data-folder lock).
    public static func migrate<S: LicenseManagerService>(_ service: S.Type, settings: Settings) throws -> [String] {
        guard let schema = S.databaseSchema else { return ["license-\(S.name) keeps no database: nothing to migrate"] }
        umask(0o077)
        let folder = settings.dataDirectory
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let lock = try DataFolderLock(service: S.name, folder: folder)
        defer { withExtendedLifetime(lock) {} }
        let path = settings["database"] ?? "\(folder)/\(S.name).sqlite"
        var before: Set<String> = []
        if FileManager.default.fileExists(atPath: path) {
            let queue = try DatabaseQueue(path: path)
            before = try queue.read { try schema.appliedIdentifiers($0) }
            try queue.close()
        }
        _ = try ServiceDatabase.open(path: path, durability: .full, migrator: schema)
        let applied = schema.migrations.filter { !before.contains($0) }
        guard !applied.isEmpty else { return ["\(path) is up to date (\(schema.migrations.count) migrations)"] }
        return ["\(path): applied \(applied.count) of \(schema.migrations.count) migrations"] + applied.map { "  \($0)" }
    }
}
