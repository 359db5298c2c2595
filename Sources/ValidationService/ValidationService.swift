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
    let feed: FeedConsumer
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
        signing: SigningCustody? = nil, clock: any LicenseClock = SystemLicenseClock(), options: Options = Options(), logger: Logger
    ) throws {
        self.database = database
        self.writes = GroupCommitter(database: database, name: "validation")
        self.replica = try LicenseReplica(database: database)
        self.maintenance = try WALMaintenance(pool: database, lookups: replica.lookups, logger: logger)
        self.masterKey = masterKey
        self.signingKeys = SigningKeyCache(replica: replica, custody: signing ?? SigningCustody(masterKey: masterKey))
        self.feed = FeedConsumer(client: issuance, replica: replica, signingKeys: signingKeys, logger: logger, idleInterval: options.feedPollInterval)
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
        let issuance = RPCClient(endpoint: try settings.endpoint("issuance", default: settings.defaultSocket("issuance")))
        let usage = RPCClient(endpoint: try settings.endpoint("usage", default: settings.defaultSocket("usage")))
        let options = try Options(settings: settings, logger: environment.logger)
        let masterKey = try Secrets.masterKey(settings: settings, developmentMode: environment.developmentMode)
        let service = try ValidationService(
            database: try openDatabase(path: environment.databasePath), issuance: issuance, usage: usage,
            keyHashSecret: try Secrets.keyHashSecret(settings: settings, developmentMode: environment.developmentMode),
            masterKey: masterKey, signing: try SigningCustody.from(settings: settings, masterKey: masterKey),
            options: options, logger: environment.logger)
        environment.sampler?.add { [database = service.database, clock = service.clock] in
            let held = try await database.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_lease WHERE expires_at > ?", arguments: [clock.now]) ?? 0
            }
            Gauge(label: "validation_seats_in_use").record(held)
        }
        return service.services(configuration: try environment.serverConfiguration)
    }

    /// The RPC server, the feed consumer and the validation log writer.
    public func services(configuration: RPCServerConfiguration) -> [any Service] {
        // Stopped in reverse order: the server first (no new validations), then the
        // feed, then the log's last write, then the checkpoints.
        // The rollups stop after the log's last write so they see it.
        let followers: [any Service] = quotaFeed.map { [$0] } ?? []
        return [maintenance, logRetention, eventRetention, rollups, log, feed] + followers
            + [RPCServer(router: router(), configuration: configuration, logger: logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        let feed = self.feed
        let quotaFeed = self.quotaFeed
        HealthReporter(service: "validation", feeds: { [feed.position()] + (quotaFeed.map { [$0.position()] } ?? []) }).register(in: &router)
        DatabaseSnapshot(service: "validation", database: database).register(in: &router)
        registerMethods(with: &router)
        return router
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
    private func visible(_ found: (LicenseFacts, MachineStanding), to call: ServerCall) -> (LicenseFacts, MachineStanding)? {
        if let tenant = call.metadata[RPCMetadata.tenant], found.0.tenantID != tenant { return nil }
        return found
    }

    /// The caller's country: as stated, else from its IP address.
    func region(stated: String, clientIP: String) -> String {
        if !stated.isEmpty { return stated.uppercased() }
        if !clientIP.isEmpty { return geo.country(of: clientIP) ?? "" }
        return ""
    }

    /// What a validation works out before its look-up.
    struct ValidationContext {
        let now: Int64
        let fingerprintHash: String
        let region: String
        /// The key's stored hash (and whether it is an imported key), or why it is malformed.
        let key: Result<KeyReference, LicenseKeyError>

        /// A miss on an imported key is final at once: imports are bulk loads, not keys
        /// issued a moment ago, and text that merely looks like one must not cost a pull.
        var importedKey: Bool { (try? key.get())?.imported ?? false }
    }

    private func context(_ request: ValidateRequest) throws -> ValidationContext {
        guard request.nonce.count <= 64 else { throw RPCError.invalidArgument("nonce is longer than 64 bytes") }
        try Check.statedRegion(request.region)
        return ValidationContext(
            now: clock.now, fingerprintHash: request.fingerprint.isEmpty ? "" : LicenseCertificates.fingerprintHash(request.fingerprint),
            region: region(stated: request.region, clientIP: request.clientIp), key: Result { () throws(LicenseKeyError) in try KeyReference(parsing: request.licenseKey, secret: keyHashSecret) })
    }

    /// Validates on the event loop, as the request is read: the key, one indexed read of
    /// the replica and the decision need no waiting. Only what could wait moves to a task:
    /// a miss (the feed is pulled once first), the first load of the signing key, a full
    /// validation log.
    public func validate(_ request: ValidateRequest, _ call: ServerCall) throws -> Immediate<ValidateResponse> {
        let context = try context(request)
        var signingKey: (any CertificateSigner)?
        if !request.nonce.isEmpty {
            guard let loaded = signingKeys.loaded else { return .later { try await self.validateAfterWaiting(request, call) } }
            signingKey = loaded
        }
        var found: (LicenseFacts, MachineStanding)?
        if case .success(let key) = context.key {
            if let hit = try replica.factsAndMachine(keyHash: key.hash, fingerprintHash: context.fingerprintHash) {
                found = visible(hit, to: call)
            } else if !key.imported {
                return .later { try await self.validateAfterWaiting(request, call) }
            }
        }
        let (response, entry) = try answer(request, context, found, signedBy: signingKey)
        // A denial is given only once the replica has caught up (see `validateAfterWaiting`).
        if Self.mayBeStale(response, context) { return .later { try await self.validateAfterWaiting(request, call, denied: response.reason) } }
        outcomes[entry.reason.rawValue]?.increment()
        guard log.tryAppend(entry) else {
            return .later {
                await self.log.append(entry)
                return response
            }
        }
        return .answer(response)
    }

    /// Validation that may wait: before a denial, or before the signing key is loaded.
    ///
    /// Read-your-writes: a change that grants rights (a license issued, renewed, reinstated,
    /// a user assigned, a feature added) must be seen by the next call, whoever makes it. So
    /// a denial is given only after the replica has caught up with issuance's head (one
    /// pull shared by every call waiting, bounded by the pull's timeout); an allowed answer
    /// needs no wait. A revocation may take up to the feed interval; a grant may not.
    /// A quota denial catches up with usage's feed instead (a limit raised a moment ago).
    /// `denied`: the denial the event loop already found, so its catch-up comes first.
    func validateAfterWaiting(_ request: ValidateRequest, _ call: ServerCall, denied: ReasonCode? = nil) async throws -> ValidateResponse {
        let context = try context(request)
        var signingKey = request.nonce.isEmpty ? nil : try await signingKeys.current()
        func decided() throws -> (ValidateResponse, ValidationLog.Entry) {
            var found: (LicenseFacts, MachineStanding)?
            if case .success(let key) = context.key,
                let hit = try replica.factsAndMachine(keyHash: key.hash, fingerprintHash: context.fingerprintHash)
            {
                found = visible(hit, to: call)
            }
            return try answer(request, context, found, signedBy: signingKey)
        }
        if let denied {
            await catchUp(before: denied)
            if signingKey == nil, !request.nonce.isEmpty { signingKey = try await signingKeys.current() }
        }
        var (response, entry) = try decided()
        if Self.mayBeStale(response, context), response.reason != denied {
            await catchUp(before: response.reason)
            // Just after a start the first signing key may have arrived with the catch-up too.
            if signingKey == nil, !request.nonce.isEmpty { signingKey = try await signingKeys.current() }
            (response, entry) = try decided()
        }
        outcomes[entry.reason.rawValue]?.increment()
        await log.append(entry)
        return response
    }

    /// A denial that a change not yet replicated could turn into a grant; a malformed key
    /// stays malformed whatever issuance knows, and an imported key that is not found is
    /// not waited for (see `ValidationContext.importedKey`).
    static func mayBeStale(_ response: ValidateResponse, _ context: ValidationContext) -> Bool {
        !response.valid && response.reason != .malformedKey && !(context.importedKey && response.reason == .notFound)
    }

    /// Catches up with the source of a denial: usage's feed for a quota (a limit raised a
    /// moment ago), issuance's for anything else.
    private func catchUp(before reason: ReasonCode) async {
        if reason == .quotaExceeded {
            await quotaFeed?.catchUp()
        } else {
            await feed.catchUp()
        }
    }

    /// The decision on what the look-up found (nil: no license of the caller's tenant has
    /// the key), the answer, signed when the client sent a nonce (and a signing key
    /// exists), and its entry for the validation log.
    /// Named users arrive from issuance as pseudonyms: the caller's user is compared as one.
    func userKey(_ user: String, _ facts: LicenseFacts?) -> String? {
        guard let facts, facts.needsNamedUser, !user.isEmpty else { return nil }
        return keyHashSecret.namedUserPseudonym(license: facts.licenseID, user: user)
    }

    private func answer(
        _ request: ValidateRequest, _ context: ValidationContext, _ found: (LicenseFacts, MachineStanding)?,
        signedBy key: (any CertificateSigner)?
    ) throws -> (ValidateResponse, ValidationLog.Entry) {
        let (now, fingerprintHash, region) = (context.now, context.fingerprintHash, context.region)
        let decision: LicenseDecision
        var facts: LicenseFacts?
        switch context.key {
        case .failure(let error):
            decision = LicenseDecision(reason: .malformedKey, state: .unspecified, detail: "license_key: \(error)")
        case .success:
            facts = found?.0
            let query = ValidationQuery(
                feature: request.feature, region: region, user: request.user, userKey: userKey(request.user, facts), machine: found?.1 ?? .unknown)
            var decided = LicenseDecider.decide(facts, query, now: now)
            if decided.allows, !request.feature.isEmpty, let facts, let block = quotas.block(license: facts.licenseID, feature: request.feature, now: now) {
                decided = LicenseDecision(
                    reason: .quotaExceeded, state: decided.state,
                    detail: "feature \(request.feature) has used \(block.used) of its \(block.limit)-per-\(block.period) quota"
                        + (block.until == 0 ? "" : "; it resets at \(ISODate.format(block.until))"))
            }
            decision = decided
        }
        var response = ValidateResponse(
            reason: decision.reason, valid: decision.allows, licenseId: facts?.licenseID ?? "", state: decision.state,
            expiresAt: facts?.expiresAt ?? 0, graceEndsAt: facts?.graceEndsAt ?? 0,
            features: decision.allows ? facts?.features ?? [] : [], serverTime: now, detail: decision.detail)
        // Signing costs one Ed25519 signature; only clients that ask (with a nonce) pay for it.
        if !request.nonce.isEmpty, let key {
            let statement = ValidationStatement(
                version: 1, reason: response.reason, licenseId: response.licenseId, expiresAt: response.expiresAt,
                graceEndsAt: response.graceEndsAt, features: response.features, serverTime: now, nonce: request.nonce,
                fingerprintSha256: fingerprintHash)
            response.statement = statement.serializedBytes()
            response.kid = key.kid
            response.signature = try key.sign(response.statement)
        }
        let entry = ValidationLog.Entry(
            occurredAt: now, licenseID: facts?.licenseID ?? "", reason: decision.reason, fingerprintHash: fingerprintHash,
            region: region, feature: request.feature)
        return (response, entry)
    }

    public func createOfflineLicense(_ request: CreateOfflineLicenseRequest, _ call: ServerCall) async throws -> OfflineLicense {
        try Check.fingerprint(request.fingerprint)
        guard request.validSeconds >= 0 else { throw RPCError.invalidArgument("valid_seconds must not be negative") }
        let now = clock.now
        let key: LicenseKey?
        let facts: LicenseFacts
        if request.licenseKey.isEmpty, !request.licenseId.isEmpty {
            guard !request.encrypt else {
                throw RPCError.invalidArgument("encrypt needs license_key: an encrypted file opens only with the key it was made with")
            }
            guard let found = try await self.facts(license: request.licenseId, call) else { throw RPCError.notFound("no license \(request.licenseId)") }
            (key, facts) = (nil, found)
        } else {
            guard let found = try await lookUp(request.licenseKey, call) else { throw RPCError.notFound("no license has this key") }
            (key, facts) = found
        }
        if request.encrypt, key == nil {
            throw RPCError.invalidArgument("encrypt works only with this system's own key format; this license's key was imported")
        }
        var usable = facts
        usable.licenseType = .unspecified
        let decision = LicenseDecider.decide(usable, ValidationQuery(), now: now)
        guard decision.allows else {
            throw RPCError.failedPrecondition("\(decision.reason): \(decision.detail)")
        }
        guard request.validSeconds <= maxOfflineSeconds else {
            throw RPCError.invalidArgument(
                "an offline license file is valid for at most \(maxOfflineSeconds / 86400) days (setting offline-max-days); "
                    + "\(request.validSeconds / 86400) days were asked for")
        }
        let seconds = request.validSeconds == 0 ? maxOfflineSeconds : request.validSeconds
        let fingerprintHash = LicenseCertificates.fingerprintHash(request.fingerprint)
        guard let certificate = try await certificate(for: facts, fingerprintHash: fingerprintHash, validFor: seconds, now: now) else {
            throw RPCError.unavailable("no signing key has reached validation yet; try again shortly")
        }
        // A file is an activation of a machine that cannot call home: it takes a machine
        // slot (listed with the file's end) until the file ends or the machine is deactivated.
        let notAfter = certificate.payload?.notAfter ?? now.saturatingAdd(seconds)
        let bound = try await writes.write { db in
            try Self.bind(facts, fingerprintHash, name: "", platform: "offline", offlineUntil: max(notAfter, now + 1), now: now, in: db)
        }
        guard bound.0 == .valid else {
            throw RPCError.failedPrecondition("\(bound.0): \(bound.2)")
        }
        let armored = if request.encrypt, let key { OfflineLicenseFile.encrypt(certificate.armored, licenseKey: key) } else { certificate.armored }
        return OfflineLicense(
            armored: armored, notBefore: certificate.payload?.notBefore ?? now, notAfter: certificate.payload?.notAfter ?? now, kid: certificate.kid)
    }
}

extension ValidationService: LicenseManagerService {
    public static let name = "validation"
}
