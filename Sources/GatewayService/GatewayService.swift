import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The services behind the gateway.
public struct Backends: Sendable {
    public var issuance: RPCClient
    public var validation: RPCClient
    public var usage: RPCClient
    public var reporting: RPCClient
    /// license-integrations (optional: a stack may run without it).
    public var integrations: RPCClient?
    /// Validation's read replicas, if any: validations go to them, everything else to `validation`.
    public var validationReplicas: ValidationReplicaSettings?

    public init(
        issuance: RPCClient, validation: RPCClient, usage: RPCClient, reporting: RPCClient, integrations: RPCClient? = nil,
        validationReplicas: ValidationReplicaSettings? = nil
    ) {
        self.integrations = integrations
        self.validationReplicas = validationReplicas
        self.issuance = issuance
        self.validation = validation
        self.usage = usage
        self.reporting = reporting
    }
}

/// Where validation's read replicas are and when one is taken out of rotation.
public struct ValidationReplicaSettings: Sendable {
    public var source: ValidationReplicaSource
    /// A replica further behind one of its feeds than this many events takes no calls.
    public var maxLagEvents: UInt64 = 1000
    /// How long one replica gets to answer before the call goes to another.
    public var attemptTimeout: Duration = .milliseconds(400)
    /// The client for a replica's address (TLS settings and connections).
    public var client: @Sendable (Endpoint) -> RPCClient

    public init(source: ValidationReplicaSource, client: @escaping @Sendable (Endpoint) -> RPCClient) {
        self.source = source
        self.client = client
    }
}

/// license-gateway: the front door. Every call is authenticated (API key), checked against
/// the role's permissions (deny by default) and rate limits, then forwarded unchanged (the
/// payload is not decoded) to the service that owns it, with the caller's remaining
/// deadline and the tenant the credential belongs to; composite calls fan out in parallel.
public final class GatewayService: Sendable {
    public struct Limits: Sendable {
        /// Calls per second (and burst) per credential, by role; admins are not limited.
        public var perRole: [Role: (rate: Double, burst: Double)] = [
            .product: (500, 1000), .issuer: (100, 200), .support: (50, 100), .auditor: (20, 40), .integration: (100, 200),
            .console: (100, 200),
        ]
        /// Calls per second (and burst) per signed-in license holder.
        public var perHolder: (rate: Double, burst: Double) = (10, 40)
        /// Validations and activations per second (and burst) per license key.
        public var validatePerKey: (rate: Double, burst: Double) = (20, 40)
        public var activatePerKey: (rate: Double, burst: Double) = (1, 5)
        /// Failed authentications per second (and burst) per source: a TCP caller's address,
        /// a local caller's process.
        public var failedAuthPerSource: (rate: Double, burst: Double) = (1, 10)
        /// And per local user, whatever number of processes it starts.
        public var failedAuthPerLocalUser: (rate: Double, burst: Double) = (10, 100)

        public init() {}
    }

    let issuance: Backend
    let validation: Backend
    let usage: Backend
    let reporting: Backend
    let integrations: Backend?
    let replicas: ReadReplicas?
    let credentials: CredentialStore
    let holderTokens: HolderTokens
    let database: DatabasePool
    /// By holder scope (license or customer).
    let holderBuckets: TokenBuckets<String>
    let clock: any LicenseClock
    let logger: Logger
    let reporter = HealthReporter(service: "gateway")
    /// By credential id.
    let roleBuckets: [Role: TokenBuckets<String>]
    let validateBuckets: TokenBuckets<LicenseKeyIdentity>
    let activateBuckets: TokenBuckets<LicenseKeyIdentity>
    /// By the caller's address, or a local caller's process.
    let failedAuthBuckets: TokenBuckets<String>
    /// By a local caller's user id.
    let failedAuthUserBuckets: TokenBuckets<String>

    var backends: [Backend] { [issuance, validation, usage, reporting] + (integrations.map { [$0] } ?? []) }

    public init(
        backends: Backends, database: DatabasePool, clock: any LicenseClock = SystemLicenseClock(),
        limits: Limits = Limits(), logger: Logger
    ) throws {
        self.issuance = Backend(name: "issuance", client: backends.issuance)
        let validation = Backend(name: "validation", client: backends.validation)
        self.validation = validation
        self.usage = Backend(name: "usage", client: backends.usage)
        self.reporting = Backend(name: "reporting", client: backends.reporting)
        self.integrations = backends.integrations.map { Backend(name: "integrations", client: $0) }
        self.replicas = try backends.validationReplicas.map { [logger] settings in
            ReadReplicas(
                source: settings.source, primary: validation, maxLag: settings.maxLagEvents,
                attemptTimeout: settings.attemptTimeout, logger: logger, makeClient: settings.client)
        }
        self.credentials = try CredentialStore(database: database)
        self.holderTokens = try HolderTokens.load(from: database)
        self.database = database
        self.holderBuckets = TokenBuckets(rate: limits.perHolder.rate, burst: limits.perHolder.burst)
        self.clock = clock
        self.logger = logger
        self.roleBuckets = limits.perRole.mapValues { TokenBuckets(rate: $0.rate, burst: $0.burst) }
        self.validateBuckets = TokenBuckets(rate: limits.validatePerKey.rate, burst: limits.validatePerKey.burst)
        self.activateBuckets = TokenBuckets(rate: limits.activatePerKey.rate, burst: limits.activatePerKey.burst)
        self.failedAuthBuckets = TokenBuckets(rate: limits.failedAuthPerSource.rate, burst: limits.failedAuthPerSource.burst)
        self.failedAuthUserBuckets = TokenBuckets(rate: limits.failedAuthPerLocalUser.rate, burst: limits.failedAuthPerLocalUser.burst)
    }

    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .full, migrator: schema)
    }

    /// Versioned schema of `gateway.sqlite`.
    public static var schema: DatabaseMigrator {
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
        migrator.registerMigration("v2: console credentials, holder sign-in") { db in
            try db.execute(sql: """
                CREATE TABLE api_key_v2 (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    -- 1 admin .. 7 console; 8 (holder) is a holder token's, never a key's.
                    role INTEGER NOT NULL CHECK (role BETWEEN 1 AND 7),
                    secret_hash TEXT NOT NULL UNIQUE,
                    prefix TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL DEFAULT 0,
                    revoked_at INTEGER NOT NULL DEFAULT 0
                );
                INSERT INTO api_key_v2 SELECT id, tenant_id, name, role, secret_hash, prefix, created_at, expires_at, revoked_at FROM api_key;
                DROP TABLE api_key;
                ALTER TABLE api_key_v2 RENAME TO api_key;
                -- The key holder tokens and sign-in links are signed with.
                CREATE TABLE gateway_secret (name TEXT PRIMARY KEY, secret BLOB NOT NULL);
                -- Sign-in links are single use: each used one, until it would have expired.
                CREATE TABLE used_sign_in_link (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
                """)
        }
        return migrator
    }

    public static func services(_ environment: ServiceEnvironment) async throws -> [any Service] {
        let settings = environment.settings
        // Mutual TLS to services on TCP (backend-ca, backend-cert, backend-key); Unix sockets need none.
        func client(_ name: String) throws -> RPCClient {
            try environment.peerClient(name, connections: 4, tlsSettings: "backend")
        }
        var backends = Backends(
            issuance: try client("issuance"), validation: try client("validation"), usage: try client("usage"), reporting: try client("reporting"),
            integrations: try client("integrations"))
        if let source = settings["validation-replicas"] {
            let parsed = try ValidationReplicaSource(parsing: source)
            // Replicas found by DNS present a certificate for the name, not for each address.
            let serverName: String? = if case .dns(let host, _) = parsed { host } else { nil }
            var replicas = ValidationReplicaSettings(source: parsed) { environment.replicaClient($0, serverName: serverName) }
            replicas.maxLagEvents = UInt64(try settings.int("replica-max-lag-events", default: 1000, in: 1...100_000_000))
            replicas.attemptTimeout = .milliseconds(try settings.int("replica-attempt-timeout-ms", default: 400, in: 50...10_000))
            backends.validationReplicas = replicas
        }
        let gateway = try GatewayService(
            backends: backends,
            database: try openDatabase(path: environment.databasePath), logger: environment.logger)
        if environment.developmentMode || settings["admin-key-file"] != nil {
            let file = settings["admin-key-file"] ?? "\(settings.dataDirectory)/secrets/admin-api-key"
            if try await gateway.credentials.bootstrapAdmin(file: file, now: gateway.clock.now) {
                environment.logger.notice("created the first admin API key", metadata: ["file": "\(file)"])
            }
        }
        var configuration = try environment.serverConfiguration
        configuration.endpoints = try settings.endpoints(
            "listen", default: [settings.defaultSocket("gateway"), .tcp(host: "127.0.0.1", port: 7400)])
        if configuration.tls == nil, configuration.endpoints.contains(where: { if case .tcp = $0 { return true } else { return false } }) {
            guard try settings.bool("allow-plaintext-tcp", default: environment.developmentMode) else {
                throw RPCError.invalidArgument(
                    "the gateway's TCP listener needs TLS: set tls-cert and tls-key (or allow-plaintext-tcp = true for a loopback test setup)")
            }
            environment.logger.warning("TCP listener without TLS: for local development only")
        }
        return [
            RPCServer(router: gateway.router(), configuration: configuration, logger: environment.logger),
            BackendProber(backends: gateway.backends, logger: environment.logger),
        ] + (gateway.replicas.map { [ReplicaProber(replicas: $0)] } ?? [])
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        // Health/Check reveals only that the gateway runs: load balancers call it without a key.
        reporter.register(in: &router)
        route(IssuanceMethods.all, to: issuance, in: &router)
        route(ValidationMethods.all, to: validation, in: &router)
        if let replicas { route([ValidationMethods.validate.info], in: &router) { replicas.forward($0) } }
        route(UsageMethods.all, to: usage, in: &router)
        route(ReportingMethods.all, to: reporting, in: &router)
        if let integrations { route(IntegrationsMethods.all, to: integrations, in: &router) }
        registerMethods(with: &router)
        router.interceptors = [GatewayAdmission(gateway: self)]
        return router
    }

    /// Every public method of a service, forwarded unchanged once admitted: unary calls
    /// without a task (the backend's answer completes a future on the caller's loop).
    private func route(_ methods: [WireMethodInfo], to backend: Backend, in router: inout RPCRouter) {
        for method in methods {
            if method.serverStreaming {
                router.register(name: method.name, .serverStreaming { call, stream in
                    let messages = try await backend.streamRaw(call.method, payload: call.payload, metadata: call.metadata, deadline: call.deadline)
                    for try await message in messages { try await stream.send(message) }
                })
            } else {
                route([method], in: &router) { backend.callRawFuture($0) }
            }
        }
    }

    /// Unary methods forwarded by `forward` once admitted.
    private func route(_ methods: [WireMethodInfo], in router: inout RPCRouter, forward: @escaping @Sendable (ServerCall) -> EventLoopFuture<[UInt8]>) {
        for method in methods {
            // The person's address behind the console is for the gateway's limits only.
            router.register(name: method.name, .immediate { call in
                guard call.metadata[RPCMetadata.authSource] != nil else { return .pending(forward(call)) }
                var metadata = call.metadata
                metadata[RPCMetadata.authSource] = nil
                metadata[RPCMetadata.endUserAddress] = nil
                return .pending(forward(call.with(metadata: metadata)))
            })
        }
    }
}

/// The methods the gateway answers itself, admitted like every forwarded call.
extension GatewayService: GatewayServiceProtocol {
    public func health(_ request: HealthCheckRequest, _ call: ServerCall) async throws -> GatewayHealthResponse {
        await health(call)
    }

    public func createApiKey(_ request: CreateApiKeyRequest, _ call: ServerCall) async throws -> CreateApiKeyResponse {
        try await createApiKey(request, call, try Caller(call))
    }

    public func listApiKeys(_ request: ListApiKeysRequest, _ call: ServerCall) async throws -> ListApiKeysResponse {
        try await listApiKeys(request, call, try Caller(call))
    }

    public func revokeApiKey(_ request: GetByIdRequest, _ call: ServerCall) async throws -> ApiKey {
        try await revokeApiKey(request, call, try Caller(call))
    }

    public func licenseOverview(_ request: GetByIdRequest, _ call: ServerCall) async throws -> LicenseOverviewResponse {
        try await licenseOverview(request, call, try Caller(call))
    }

    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> GatewayEraseCustomerResponse {
        try await eraseCustomer(request, call, try Caller(call))
    }

    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> GatewayCustomerExport {
        try await exportCustomer(request, call, try Caller(call))
    }

    /// One service's database, or the gateway's own, streamed for licensectl backup.
    public func backup(_ request: SnapshotRequest, _ call: ServerCall, _ stream: TypedResponseStream<SnapshotChunk>) async throws {
        _ = try Caller(call)
        if request.service == "gateway" {
            return try await DatabaseSnapshot(service: "gateway", database: database).send { try await stream.send($0) }
        }
        // Issuance's list of erased customers is its own copy (see IssuanceService.router).
        let (name, part) = request.service == "issuance-erasures" ? ("issuance", "erasures") : (request.service, "")
        guard let backend = backends.first(where: { $0.name == name }) else {
            throw RPCError.invalidArgument("service must be one of: \((backends.map(\.name) + ["issuance-erasures", "gateway"]).joined(separator: ", "))")
        }
        let chunks = try await backend.streamRaw(
            BackupMethods.snapshot.name, payload: SnapshotRequest(service: part).serializedBytes(), metadata: call.metadata, deadline: call.deadline)
        for try await chunk in chunks { try await stream.send(try SnapshotChunk(serializedBytes: chunk)) }
    }

    public func whoAmI(_ request: WhoAmIRequest, _ call: ServerCall) async throws -> WhoAmIResponse {
        try await whoAmI(request, call, try Caller(call))
    }

    public func signInHolder(_ request: SignInHolderRequest, _ call: ServerCall) async throws -> SignInHolderResponse {
        try await signInHolder(request, call, try Caller(call))
    }

    public func createSignInLink(_ request: CreateSignInLinkRequest, _ call: ServerCall) async throws -> CreateSignInLinkResponse {
        try await createSignInLink(request, call, try Caller(call))
    }

    public func holderLicenses(_ request: HolderLicensesRequest, _ call: ServerCall) async throws -> HolderLicensesResponse {
        try await holderLicenses(request, call, try Caller(call))
    }

    public func holderDeactivate(_ request: HolderDeactivateRequest, _ call: ServerCall) async throws -> DeactivateResponse {
        try await holderDeactivate(request, call, try Caller(call))
    }

    public func holderOfflineLicense(_ request: HolderOfflineLicenseRequest, _ call: ServerCall) async throws -> OfflineLicense {
        try await holderOfflineLicense(request, call, try Caller(call))
    }

    public func revealLicenseKey(_ request: RevealLicenseKeyRequest, _ call: ServerCall) async throws -> RevealLicenseKeyResponse {
        try await revealLicenseKey(request, call, try Caller(call))
    }
}

extension GatewayService: LicenseManagerService {
    public static let name = "gateway"
    public static var databaseSchema: DatabaseMigrator? { schema }
}
