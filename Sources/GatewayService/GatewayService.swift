import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// The services behind the gateway and where they listen.
public struct Backends: Sendable {
    public var issuance: RPCClient
    public var validation: RPCClient
    public var usage: RPCClient
    public var reporting: RPCClient

    public init(issuance: RPCClient, validation: RPCClient, usage: RPCClient, reporting: RPCClient) {
        self.issuance = issuance
        self.validation = validation
        self.usage = usage
        self.reporting = reporting
    }

    var all: [(name: String, client: RPCClient)] {
        [("issuance", issuance), ("validation", validation), ("usage", usage), ("reporting", reporting)]
    }
}

/// license-gateway: the front door. Every public method is forwarded unchanged (the
/// payload is not decoded) to the service that owns it, with the caller's remaining
/// deadline; composite calls fan out in parallel.
public final class GatewayService: Sendable {
    let backends: Backends
    let database: DatabasePool
    let logger: Logger
    let reporter = HealthReporter(service: "gateway")

    public init(backends: Backends, database: DatabasePool, logger: Logger) {
        self.backends = backends
        self.database = database
        self.logger = logger
    }

    public static func openDatabase(path: String) throws -> DatabasePool {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: api credentials") { db in
            try db.execute(sql: """
                CREATE TABLE api_key (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    role INTEGER NOT NULL CHECK (role BETWEEN 1 AND 6),
                    secret_hash TEXT NOT NULL UNIQUE,
                    prefix TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL DEFAULT 0,
                    revoked_at INTEGER NOT NULL DEFAULT 0
                );
                """)
        }
        return try ServiceDatabase.open(path: path, durability: .full, migrator: migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        func client(_ name: String) throws -> RPCClient {
            RPCClient(endpoint: try settings.endpoint(name, default: settings.defaultSocket(name)))
        }
        let backends = Backends(
            issuance: try client("issuance"), validation: try client("validation"),
            usage: try client("usage"), reporting: try client("reporting"))
        let gateway = GatewayService(backends: backends, database: try openDatabase(path: environment.databasePath), logger: environment.logger)
        var configuration = try environment.serverConfiguration
        configuration.endpoints = try settings.endpoints(
            "listen", default: [settings.defaultSocket("gateway"), .tcp(host: "127.0.0.1", port: 7400)])
        return [RPCServer(router: gateway.router(), configuration: configuration, logger: environment.logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        reporter.register(in: &router)
        route(IssuanceMethods.all, to: backends.issuance, in: &router)
        route(ValidationMethods.all, to: backends.validation, in: &router)
        route(UsageMethods.all, to: backends.usage, in: &router)
        route(ReportingMethods.all, to: backends.reporting, in: &router)
        router.register(GatewayMethods.health) { _, call in await self.health(call) }
        return router
    }

    private func route(_ methods: [WireMethodInfo], to backend: RPCClient, in router: inout RPCRouter) {
        for method in methods {
            if method.serverStreaming {
                router.register(name: method.name, .serverStreaming { call, stream in
                    let messages = try await backend.streamRaw(
                        call.method, payload: call.payload, metadata: Self.forwarded(call.metadata), deadline: call.deadline)
                    for try await message in messages {
                        try await stream.send(message)
                    }
                })
            } else {
                router.register(name: method.name, .unary { call in
                    try await backend.callRaw(call.method, payload: call.payload, metadata: Self.forwarded(call.metadata), deadline: call.deadline)
                })
            }
        }
    }

    /// Metadata passed on: the caller's own, minus anything only the gateway may set.
    static func forwarded(_ metadata: RPCMetadata) -> RPCMetadata {
        var metadata = metadata
        metadata.removeAll(prefixed: RPCMetadata.gatewayPrefix)
        metadata[RPCMetadata.apiKey] = nil
        metadata[RPCMetadata.tenant] = "default"
        return metadata
    }

    /// Every service's health, asked in parallel; a service that does not answer is
    /// reported with its status instead of failing the whole answer.
    func health(_ call: ServerCall) async -> GatewayHealthResponse {
        let parts = await withTaskGroup(of: (Int, ComponentHealth).self) { group in
            for (index, backend) in backends.all.enumerated() {
                group.addTask {
                    do {
                        let health = try await backend.client.call(
                            HealthMethods.check, HealthCheckRequest(), timeout: min(.seconds(2), call.deadline - .now))
                        return (index, ComponentHealth(name: backend.name, code: .ok, health: health))
                    } catch let error as RPCError {
                        return (index, ComponentHealth(name: backend.name, code: error.code, message: error.message))
                    } catch {
                        return (index, ComponentHealth(name: backend.name, code: .unavailable, message: "\(error)"))
                    }
                }
            }
            var parts: [(Int, ComponentHealth)] = []
            for await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let own = ComponentHealth(name: "gateway", code: .ok, health: await reporter.check())
        return GatewayHealthResponse(components: [own] + parts)
    }
}
