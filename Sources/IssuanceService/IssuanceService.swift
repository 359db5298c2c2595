import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import Metrics
import ServiceLifecycle

/// license-issuance: the system of record for products, policies, customers and licenses,
/// their subscriptions and signing keys, and the change feed the other services learn from.
public final class IssuanceService: Sendable {
    let database: DatabasePool
    let clock: any LicenseClock
    let keyHashSecret: KeyHashSecret
    let masterKey: MasterKey
    let signing: SigningCustody
    let vault: CustomerVault
    let erasures: ErasureLedger
    let idempotencyTTL: Int64
    let logger: Logger
    let committer: GroupCommitter

    public init(
        database: DatabasePool, keyHashSecret: KeyHashSecret, masterKey: MasterKey,
        signing: SigningCustody? = nil, clock: any LicenseClock = SystemLicenseClock(), idempotencyTTL: Int64 = 86400, logger: Logger
    ) throws {
        self.signing = signing ?? SigningCustody(masterKey: masterKey)
        self.database = database
        self.erasures = try ErasureLedger(path: ErasureLedger.path(besides: database.path))
        self.keyHashSecret = keyHashSecret
        self.masterKey = masterKey
        self.vault = CustomerVault(masterKey: masterKey, keyHashSecret: keyHashSecret)
        self.clock = clock
        self.idempotencyTTL = idempotencyTTL
        self.logger = logger
        self.committer = GroupCommitter(database: database, name: "issuance")
    }

    /// Opens `issuance.sqlite` with `synchronous=FULL`: nothing acknowledged is lost on power failure.
    public static func openDatabase(path: String) throws -> DatabasePool {
        // Freed pages are zeroed: a deleted or rewritten row leaves nothing behind in the file.
        try ServiceDatabase.open(path: path, durability: .full, migrator: IssuanceSchema.migrator, secureDelete: true)
    }

    /// Everything the executable runs, from its environment.
    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        // One token (if any) for the master key and the signing keys: one session, one PIN read.
        let token = try Secrets.pkcs11Token(settings)
        let masterKey = try Secrets.masterKey(settings: settings, developmentMode: environment.developmentMode, token: token)
        let service = try IssuanceService(
            database: try openDatabase(path: environment.databasePath),
            keyHashSecret: try Secrets.keyHashSecret(settings: settings, developmentMode: environment.developmentMode),
            masterKey: masterKey, signing: try SigningCustody.from(settings: settings, masterKey: masterKey, token: token),
            idempotencyTTL: Int64(try settings.int("idempotency-ttl-seconds", default: 86400, in: 60...30 * 86400)),
            logger: environment.logger)
        do {
            try service.ensureSigningKey()
        } catch {
            // A token that is down must not stop issuance: only signing waits for it.
            environment.logger.warning("no signing key could be made yet; certificates wait for it", metadata: ["error": "\(error)"])
        }
        try service.database.write { db in
            try IdempotencyStore.sealLegacyRows(masterKey: service.masterKey, in: db)
            try service.vault.sealLegacyRows(in: db)
        }
        if try service.replayErasures() > 0 {
            environment.logger.notice("erasures recorded after the data was written (a restore) were carried out again")
        }
        let scheduler = ExpiryScheduler(
            service: service, interval: .seconds(Int64(try settings.int("scheduler-interval-seconds", default: 5, in: 1...3600))))
        environment.sampler?.add { [database = service.database] in
            let (states, head) = try await database.read { db in
                (try Row.fetchAll(db, sql: "SELECT state, COUNT(*) FROM license GROUP BY state").map { (LicenseState(rawValue: $0[0]), $0[1] as Int) },
                 try ChangeFeed.lastSeq(in: db))
            }
            for state in LicenseState.allKnown where state.rawValue != 0 {
                Gauge(label: "issuance_licenses", dimensions: [("state", state.description)]).record(states.first { $0.0 == state }?.1 ?? 0)
            }
            Gauge(label: "issuance_feed_last_seq").record(Int64(clamping: head))
        }
        // Stopped in reverse order: the server first, the checkpoints last.
        return [
            try WALMaintenance(pool: service.database, logger: environment.logger), scheduler,
            RPCServer(router: service.router(), configuration: try environment.serverConfiguration, logger: environment.logger),
        ]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        HealthReporter(service: "issuance").register(in: &router)
        // The erasure list is copied on its own ("erasures"), after the data, so a backup's
        // list is never older than its data.
        router.registerStream(BackupMethods.snapshot) { [database, erasures] request, _, stream in
            switch request.service {
            case "", "issuance": try await DatabaseSnapshot(service: "issuance", database: database).send { try await stream.send($0) }
            case "erasures": try await DatabaseSnapshot(service: "issuance-erasures", database: erasures.queue).send { try await stream.send($0) }
            default: throw RPCError.invalidArgument("issuance copies \"issuance\" or \"erasures\", not \"\(request.service)\"")
            }
        }
        registerMethods(with: &router)
        return router
    }

    /// The tenant a call acts for, as the gateway stated it; direct local callers act for "default".
    func tenant(_ call: ServerCall) -> String {
        call.metadata[RPCMetadata.tenant] ?? "default"
    }

    /// A local caller on the service's own socket, or the operator through the gateway (a
    /// credential of the "default" tenant): the callers who may act on every tenant.
    func isOperator(_ call: ServerCall) -> Bool {
        guard let tenant = call.metadata[RPCMetadata.tenant] else { return true }
        return tenant == "default"
    }

    /// The change feed carries every tenant's rows and sealed signing keys: it is for the
    /// services on this host, never for a call that came through the gateway.
    func requireService(_ call: ServerCall) throws(RPCError) {
        guard call.metadata[RPCMetadata.tenant] == nil else {
            throw RPCError(.permissionDenied, "\(call.method) is for the services behind the gateway")
        }
    }

    /// Signing keys and the audit chain are shared by every tenant. The gateway refuses
    /// other tenants first; this holds even for a caller that reaches the service otherwise.
    func requireOperator(_ call: ServerCall) throws(RPCError) {
        guard isOperator(call) else {
            throw RPCError(.permissionDenied, "\(call.method) acts on every tenant: only the operator may call it")
        }
    }

    /// Runs a write transaction, turning constraint violations into a clear status.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await Self.explainingConstraints { try await self.database.write(body) }
    }

    /// Runs a change in the next group commit (see ``GroupCommitter``).
    func groupWrite<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await Self.explainingConstraints { try await self.committer.write(body) }
    }

    private static func explainingConstraints<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw RPCError.failedPrecondition("the change breaks a rule of the stored data: \(error.message ?? "constraint failed")")
        }
    }
}

/// Every method of the Issuance contract; the few that share a handler say how here.
extension IssuanceService: IssuanceServiceProtocol {
    public func suspendLicense(_ request: LicenseTransitionRequest, _ call: ServerCall) async throws -> License {
        try await transition(request, call, to: .suspended)
    }

    public func reinstateLicense(_ request: LicenseTransitionRequest, _ call: ServerCall) async throws -> License {
        try await transition(request, call, to: .active)
    }

    public func revokeLicense(_ request: LicenseTransitionRequest, _ call: ServerCall) async throws -> License {
        try await transition(request, call, to: .revoked)
    }

    public func assignUser(_ request: AssignUserRequest, _ call: ServerCall) async throws -> License {
        try await assignUser(request, call, assign: true)
    }

    public func unassignUser(_ request: AssignUserRequest, _ call: ServerCall) async throws -> License {
        try await assignUser(request, call, assign: false)
    }

    public func rotateSigningKey(_ request: CreateSigningKeyRequest, _ call: ServerCall) async throws -> SigningKey {
        try await createSigningKey(request, call)
    }
}

extension IssuanceService: LicenseManagerService {
    public static let name = "issuance"
    public static var databaseSchema: DatabaseMigrator? { IssuanceSchema.migrator }
}
