import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import Metrics
import ServiceLifecycle

/// license-validation: the hot path. Answers validations, activations, seat checkouts and
/// offline files from its own replica of the license facts, so it keeps answering while
/// issuance is down.
public final class ValidationService: ValidationServiceProtocol {
    let database: DatabasePool
    /// Activations, deactivations and seat changes: durable before they are answered, and
    /// those arriving together share one transaction and one disk sync.
    let writes: GroupCommitter
    let replica: LicenseReplica
    let maintenance: WALMaintenance
    let feed: FeedFollower<ChangeEvent>
    let signingKeys: SigningKeyCache
    let masterKey: MasterKey
    let log: ValidationLog
    let keyHashSecret: KeyHashSecret
    let geo: GeoTable
    let clock: any LicenseClock
    let seatTTL: Int64
    let maxOfflineSeconds: Int64
    let activationLimiter: ActivationLimiter
    /// The raw validation log is kept for a retention period, and so is the event feed.
    let logRetention: Retention
    let eventRetention: Retention
    let rollups: OutcomeRollups
    /// Quotas usage says are used up, and the follower of usage's feed that applies them.
    let quotas: QuotaBlocks
    let quotaFeed: FeedFollower<UsageFeedEvent>?
    /// Primary or read replica; a replica follows the primary's machines and ships its log there.
    let role: ValidationRole
    let machineMirror: FeedFollower<ValidationEvent>?
    let logShipper: LogShipper?
    let logger: Logger

    public struct Options: Sendable {
        public var feedPollInterval: Duration = .milliseconds(200)
        /// How often closed minutes of the validation log are rolled up into the event feed.
        public var rollupInterval: Duration = .seconds(5)
        /// Seat leases last this long without a heartbeat.
        public var seatTTL: Int64 = 300
        /// Activations allowed per license per hour.
        public var activationsPerHour: Int = 20
        /// The longest validity an offline license file gets.
        public var maxOfflineSeconds: Int64 = 90 * 86400
        /// How long validation-log rows are kept.
        public var logRetentionSeconds: Int64 = 90 * 86400
        public var geo: GeoTable = .empty

        public init() {}

        /// From a service's settings; what is not set keeps the default above.
        public init(settings: Settings, logger: Logger) throws {
            self.init()
            seatTTL = Int64(try settings.int("seat-ttl-seconds", default: Int(seatTTL), in: 10...86_400))
            activationsPerHour = try settings.int("activations-per-hour", default: activationsPerHour, in: 1...1_000_000)
            maxOfflineSeconds = Int64(try settings.int("offline-max-days", default: Int(maxOfflineSeconds / 86400), in: 1...3650)) * 86400
            logRetentionSeconds = Int64(try settings.int("log-retention-days", default: Int(logRetentionSeconds / 86400), in: 1...3650)) * 86400
            if let file = settings["geoip-file"] {
                let text: String
                do {
                    text = try String(contentsOfFile: file, encoding: .utf8)
                } catch {
                    throw RPCError.invalidArgument("cannot read geoip-file \(file): \(error.localizedDescription)")
                }
                geo = try GeoTable(parsing: text)
                logger.info("geo table loaded", metadata: ["ranges": "\(geo.count)", "file": "\(file)"])
            }
        }
    }

    public init(
        database: DatabasePool, issuance: RPCClient, usage: RPCClient? = nil, keyHashSecret: KeyHashSecret, masterKey: MasterKey,
        signing: SigningCustody? = nil, clock: any LicenseClock = SystemLicenseClock(), options: Options = Options(),
        role: ValidationRole = .primary, logger: Logger
    ) throws {
        self.database = database
        self.role = role
        if case .replica(let primary) = role {
            machineMirror = MachineMirror.follower(primary: primary, database: database, idleInterval: options.feedPollInterval, logger: logger)
            logShipper = LogShipper(database: database, primary: primary, logger: logger)
        } else {
            machineMirror = nil
            logShipper = nil
        }
        self.writes = GroupCommitter(database: database, name: "validation")
        self.replica = try LicenseReplica(database: database)
        self.maintenance = try WALMaintenance(pool: database, lookups: replica.lookups, logger: logger)
        self.masterKey = masterKey
        self.signingKeys = SigningKeyCache(replica: replica, custody: signing ?? SigningCustody(masterKey: masterKey))
        self.feed = replica.follower(issuance: issuance, signingKeys: signingKeys, idleInterval: options.feedPollInterval, logger: logger)
        self.log = ValidationLog(database: database, logger: logger)
        self.keyHashSecret = keyHashSecret
        self.geo = options.geo
        self.clock = clock
        self.seatTTL = options.seatTTL
        self.maxOfflineSeconds = options.maxOfflineSeconds
        self.activationLimiter = ActivationLimiter(perHour: options.activationsPerHour, clock: clock)
        self.logRetention = Retention(
            pool: database, table: "validation_log", timeColumn: "occurred_at", keep: options.logRetentionSeconds,
            clock: { clock.now }, logger: logger)
        self.eventRetention = Retention(
            pool: database, table: ValidationEvents.journal.table, timeColumn: "occurred_at", keep: options.logRetentionSeconds,
            clock: { clock.now }, logger: logger)
        self.rollups = OutcomeRollups(database: database, clock: { clock.now }, interval: options.rollupInterval, logger: logger)
        let quotas = try QuotaBlocks(database: database)
        self.quotas = quotas
        self.quotaFeed = usage.map { quotas.follower(usage: $0, idleInterval: options.feedPollInterval, logger: logger) }
        self.logger = logger
        self.outcomes = Dictionary(uniqueKeysWithValues: ReasonCode.allKnown.map {
            ($0.rawValue, Counter(label: "validation_outcomes_total", dimensions: [("reason", $0.description)]))
        })
    }

    /// Validations answered, by reason: one counter per reason, made at start (no lock when counting).
    let outcomes: [Int32: Counter]

    /// Activations and leases must survive a crash, so this database syncs fully; the
    /// validation log stays cheap because it is written in batches.
    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .full, migrator: ValidationSchema.migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        let issuance = try environment.peerClient("issuance")
        let usage = try environment.peerClient("usage")
        let options = try Options(settings: settings, logger: environment.logger)
        // One token (if any) for the master key and the signing keys: one session, one PIN read.
        let token = try Secrets.pkcs11Token(settings)
        let masterKey = try Secrets.masterKey(settings: settings, developmentMode: environment.developmentMode, token: token)
        let service = try ValidationService(
            database: try openDatabase(path: environment.databasePath), issuance: issuance, usage: usage,
            keyHashSecret: try Secrets.keyHashSecret(settings: settings, developmentMode: environment.developmentMode),
            masterKey: masterKey, signing: try SigningCustody.from(settings: settings, masterKey: masterKey, token: token),
            options: options, role: try ValidationRole.from(environment), logger: environment.logger)
        if case .replica = service.role {
            environment.readiness?.add("copying the license facts and machines") { service.copying().isEmpty }
        }
        environment.sampler?.add { [database = service.database, clock = service.clock] in
            let held = try await database.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_lease WHERE expires_at > ?", arguments: [clock.now]) ?? 0
            }
            Gauge(label: "validation_seats_in_use").record(held)
        }
        return service.services(configuration: try environment.serverConfiguration)
    }

    /// The RPC server after the background work.
    public func services(configuration: RPCServerConfiguration) -> [any Service] {
        backgroundServices() + [RPCServer(router: router(), configuration: configuration, logger: logger)]
    }

    /// The feed consumers, the validation log writer, its rollups, retention and checkpoints.
    public func backgroundServices() -> [any Service] {
        // Stopped in reverse order: the server first (no new validations), then the
        // feed, then the log's last write, then the checkpoints.
        // The rollups stop after the log's last write so they see it.
        let followers: [any Service] = (quotaFeed.map { [$0] } ?? []) + (machineMirror.map { [$0] } ?? [])
        if let logShipper {
            // A replica keeps no history: its log goes to the primary (after the log's last write).
            return [maintenance, logShipper, log, feed] + followers
        }
        return [maintenance, logRetention, eventRetention, rollups, log, feed] + followers
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        let feed = self.feed
        let others = [quotaFeed?.position, machineMirror?.position].compactMap { $0 }
        HealthReporter(service: "validation", feeds: { [feed.position()] + others.map { $0() } }, problems: { self.copying() }).register(in: &router)
        registerMethods(with: &router)
        switch role {
        case .primary:
            DatabaseSnapshot(service: "validation", database: database).register(in: &router)
        case .replica(let primary):
            // A replica answers Validate; the rest is the primary's (its database is disposable,
            // so there is nothing of it to back up).
            for method in ValidationMethods.all where method.name != ValidationMethods.validate.name {
                router.register(name: method.name, Self.forwarding(method, to: primary))
            }
        }
        return router
    }

    /// A read replica that has not yet copied its sources once (a new one loads every license
    /// and machine) would deny what they grant: until then it says so, is not ready, and the
    /// gateway sends it no validations.
    func copying() -> [String] {
        guard let machineMirror else { return [] }
        var waiting: [String] = []
        if !feed.hasCaughtUp {
            let position = feed.position()
            waiting.append("copying issuance's license facts (\(position.appliedSeq) of \(position.sourceSeq) events)")
        }
        if !machineMirror.hasCaughtUp { waiting.append("copying the primary's machines") }
        return waiting
    }

    /// A method forwarded unchanged to the primary, with the caller's metadata and deadline.
    static func forwarding(_ method: WireMethodInfo, to primary: RPCClient) -> MethodHandler {
        if method.serverStreaming {
            return .serverStreaming { call, stream in
                let messages = try await primary.streamRaw(call.method, payload: call.payload, metadata: call.metadata, deadline: call.deadline)
                for try await message in messages { try await stream.send(message) }
            }
        }
        return .immediate { call in
            .pending(primary.callRawFuture(call.method, payload: call.payload, metadata: call.metadata, deadline: call.deadline, on: call.eventLoop))
        }
    }

    /// The key and its license's facts, or nil when no license of the caller's tenant has
    /// the key. A malformed key is the caller's error.
    func lookUp(_ text: String, _ call: ServerCall) async throws -> (LicenseKey?, LicenseFacts)? {
        let key: KeyReference
        do {
            key = try KeyReference(parsing: text, secret: keyHashSecret)
        } catch {
            throw RPCError.invalidArgument("license_key: \(error)")
        }
        return try await find(key, fingerprintHash: "", call).map { (key.native, $0.0) }
    }

    /// The facts for a key and, for a node-locked license, where the fingerprint stands.
    /// A miss pulls the feed once (the key may have been issued a moment ago) before it is
    /// NOT_FOUND.
    func find(_ key: KeyReference, fingerprintHash: String, _ call: ServerCall) async throws -> (LicenseFacts, MachineStanding)? {
        let keyHash = key.hash
        var found = try replica.factsAndMachine(keyHash: keyHash, fingerprintHash: fingerprintHash)
        if found == nil {
            await feed.catchUp()
            found = try replica.factsAndMachine(keyHash: keyHash, fingerprintHash: fingerprintHash)
        }
        return found.flatMap { visible($0, to: call) }
    }

    /// Calls through the gateway carry the tenant and see only its licenses; local callers
    /// without one are trusted with any key they hold.
    func visible(_ found: (LicenseFacts, MachineStanding), to call: ServerCall) -> (LicenseFacts, MachineStanding)? {
        if let tenant = call.metadata[RPCMetadata.tenant], found.0.tenantID != tenant { return nil }
        return found
    }

    /// The caller's country: as stated, else from its IP address.
    func region(stated: String, clientIP: String) -> String {
        if !stated.isEmpty { return stated.uppercased() }
        if !clientIP.isEmpty { return geo.country(of: clientIP) ?? "" }
        return ""
    }

}

extension ValidationService: LicenseManagerService {
    public static let name = "validation"
    public static var databaseSchema: DatabaseMigrator? { ValidationSchema.migrator }
}
