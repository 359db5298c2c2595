import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-usage: feature usage and metering, quotas, concurrency, compliance alerts.
/// Records usage events (durably, each counted once by its event id) into per-day
/// rollups, keeps quota states, follows validation's event feed to watch how licenses are
/// used, raises alerts, and publishes all of it on its own feed.
public final class UsageService: UsageServiceProtocol {
    let database: DatabasePool
    /// license-validation, which resolves the license keys and ids events name.
    let validation: RPCClient
    let clock: any LicenseClock
    let logger: Logger
    /// Batches from many callers commit together: one disk sync for all that arrive at once.
    let committer: GroupCommitter
    let options: Options
    let publisher: UsageFeed
    let compliance: FeedFollower<ValidationEvent>

    public struct Options: Sendable {
        /// How long raw usage events are kept; the daily rollups stay.
        public var retentionSeconds: Int64 = 90 * 86400
        /// How often changed rollups, quota states and alerts go out on the feed.
        public var feedInterval: Duration = .seconds(1)
        /// How often validation's feed is pulled once caught up.
        public var followInterval: Duration = .milliseconds(500)
        public var rules = ComplianceRules()

        public init() {}

        public init(settings: Settings) throws {
            self.init()
            retentionSeconds = Int64(try settings.int("retention-days", default: Int(retentionSeconds / 86400), in: 1...3650)) * 86400
            rules = try ComplianceRules(settings: settings)
        }
    }

    public init(
        database: DatabasePool, validation: RPCClient, clock: any LicenseClock = SystemLicenseClock(), options: Options = Options(), logger: Logger
    ) {
        self.database = database
        self.committer = GroupCommitter(database: database, name: "usage")
        self.validation = validation
        self.clock = clock
        self.options = options
        self.logger = logger
        self.publisher = UsageFeed(database: database, clock: clock, interval: options.feedInterval, logger: logger)
        let monitor = ComplianceMonitor(rules: options.rules, clock: clock)
        self.compliance = FeedFollower(feed: ComplianceMonitor.feed, database: database, idleInterval: options.followInterval, logger: logger) { after in
            let response = try await validation.call(ValidationMethods.events, FeedRequest(afterSeq: after, limit: 1000), timeout: .seconds(5))
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
        } apply: { events, cursor, _ in
            try await database.write { db in try monitor.apply(events, cursor: cursor, in: db) }
        }
    }

    /// Usage events are acknowledged only once durable, so the database syncs fully.
    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .full, migrator: UsageSchema.migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let validation = try environment.peerClient("validation")
        let service = UsageService(
            database: try openDatabase(path: environment.databasePath), validation: validation,
            options: try Options(settings: environment.settings), logger: environment.logger)
        return try service.services(configuration: try environment.serverConfiguration)
    }

    /// The RPC server, the feeds in and out, retention and checkpoints. Stopped in reverse
    /// order: the server first, the checkpoints last.
    public func services(configuration: RPCServerConfiguration) throws -> [any Service] {
        let now: @Sendable () -> Int64 = { [clock] in clock.now }
        return [
            try WALMaintenance(pool: database, logger: logger),
            Retention(pool: database, table: "usage_event", timeColumn: "received_at", keep: options.retentionSeconds, clock: now, logger: logger),
            Retention(pool: database, table: UsageFeed.journal.table, timeColumn: "occurred_at", keep: options.retentionSeconds, clock: now, logger: logger),
            // The rules count in hours and days: two days of windows are enough.
            Retention(pool: database, table: "rule_window", timeColumn: "window_start", keep: 2 * 86400, clock: now, logger: logger),
            Retention(pool: database, table: "distinct_seen", timeColumn: "day", keep: 2 * 86400, clock: now, logger: logger),
            publisher,
            compliance,
            RPCServer(router: router(), configuration: configuration, logger: logger),
        ]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        let compliance = self.compliance
        HealthReporter(service: "usage", feeds: { [compliance.position()] }).register(in: &router)
        DatabaseSnapshot(service: "usage", database: database).register(in: &router)
        registerMethods(with: &router)
        return router
    }

    /// How far from now an event's time may be: a product offline for a while reports late,
    /// a clock far ahead is wrong.
    static let acceptedPast: Int64 = 35 * 86400
    static let acceptedFuture: Int64 = 300

    /// Records a batch of events in one transaction, acknowledged once it is on disk. An
    /// event id seen before is counted as a duplicate, not again, so clients may retry.
    /// Each event names its license by key (what a product knows) or by id; validation
    /// resolves them for the caller's tenant. A bad event (no id, no license, a license that
    /// does not exist or is another tenant's, no feature, no quantity, a time too far from
    /// now) is refused on its own with the reason; the good ones of the batch are kept.
    public func recordUsage(_ request: RecordUsageRequest, _ call: ServerCall) async throws -> RecordUsageResponse {
        guard !request.events.isEmpty else { throw RPCError.invalidArgument("events is empty") }
        guard request.events.count <= 1000 else { throw RPCError.invalidArgument("at most 1000 events per call, got \(request.events.count)") }
        let now = clock.now
        var rejected: [RejectedEvent] = []
        func refuse(_ index: Int, _ event: UsageEvent, _ reason: String) {
            rejected.append(RejectedEvent(index: UInt32(index), eventId: event.eventId, reason: reason))
        }
        var candidates: [(index: Int, event: UsageEvent)] = []
        for (index, event) in request.events.enumerated() {
            let at = event.occurredAt == 0 ? now : event.occurredAt
            if event.eventId.isEmpty || event.eventId.count > 200 {
                refuse(index, event, "event_id is required (at most 200 characters)")
            } else if event.licenseKey.isEmpty && event.licenseId.isEmpty {
                refuse(index, event, "names no license: give its license_key (or license_id)")
            } else if event.feature.isEmpty || event.feature.count > 64 {
                refuse(index, event, "feature is required (at most 64 characters)")
            } else if event.quantity == 0 {
                refuse(index, event, "quantity must be 1 or more")
            } else if event.user.count > 200 {
                refuse(index, event, "user is longer than 200 characters")
            } else if at < now - Self.acceptedPast || at > now + Self.acceptedFuture {
                refuse(index, event, "occurred_at \(ISODate.format(at)) is too far from now (events up to 35 days old and 5 minutes ahead are taken)")
            } else {
                candidates.append((index, event))
            }
        }
        let licenses = try await resolve(candidates.map(\.event), call)
        var recordable: [(event: UsageEvent, license: ResolvedLicense)] = []
        for (candidate, license) in zip(candidates, licenses) {
            if license.found {
                recordable.append((candidate.event, license))
            } else {
                refuse(candidate.index, candidate.event, candidate.event.licenseKey.isEmpty
                    ? "no license \(RPCError.quoted(candidate.event.licenseId, limit: 40))" : "no license has this key")
            }
        }
        let rows = recordable.map { event, license in
            RecordedEvent(
                license: license, eventId: event.eventId, feature: event.feature, quantity: event.quantity,
                occurredAt: event.occurredAt == 0 ? now : event.occurredAt,
                user: event.user.isEmpty ? "" : Pseudonym.user(event.user, tenant: license.tenantId),
                machine: event.fingerprint.isEmpty ? "" : LicenseCertificates.fingerprintHash(event.fingerprint))
        }
        let (accepted, alerts) = rows.isEmpty ? (0, []) : try await committer.write { db in try Self.record(rows, now: now, in: db) }
        return RecordUsageResponse(
            accepted: UInt32(accepted), duplicates: UInt32(recordable.count - accepted), alerts: alerts,
            rejected: rejected.sorted { $0.index < $1.index })
    }

    struct RecordedEvent: Sendable {
        let license: ResolvedLicense
        let eventId: String
        let feature: String
        let quantity: UInt64
        let occurredAt: Int64
        let user: String
        let machine: String
    }

    /// Writes the events not seen before, adds them to the daily rollups and brings the
    /// quota states of what they used up to date: one transaction, so a rollup never counts
    /// an event that was not recorded or misses one that was.
    static func record(_ rows: [RecordedEvent], now: Int64, in db: Database) throws -> (Int, [ComplianceAlert]) {
        let insert = try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO usage_event (tenant_id, event_id, license_id, feature, quantity, occurred_at, received_at, user, machine)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        struct Day: Hashable {
            let tenant: String
            let license: String
            let feature: String
            let day: Int64
        }
        var days: [Day: (quantity: Int64, events: Int64)] = [:]
        var licenses: [String: ResolvedLicense] = [:]
        var accepted = 0
        for row in rows {
            try insert.execute(arguments: [
                row.license.tenantId, row.eventId, row.license.licenseId, row.feature, Int64(clamping: row.quantity), row.occurredAt, now, row.user, row.machine,
            ])
            guard db.changesCount > 0 else { continue }
            accepted += 1
            let day = Day(tenant: row.license.tenantId, license: row.license.licenseId, feature: row.feature, day: row.occurredAt.floorDiv(86400) * 86400)
            let sum = days[day, default: (0, 0)]
            days[day] = (sum.quantity.saturatingAdd(Int64(clamping: row.quantity)), sum.events + 1)
            licenses[row.license.licenseId] = row.license
        }
        for license in licenses.values { try remember(license, in: db) }
        let rollup = try db.cachedStatement(sql: """
            INSERT INTO usage_daily (tenant_id, license_id, feature, day, quantity, events, dirty) VALUES (?, ?, ?, ?, ?, ?, 1)
            ON CONFLICT(tenant_id, license_id, feature, day) DO UPDATE SET
                quantity = quantity + excluded.quantity, events = events + excluded.events, dirty = 1
            """)
        var features = Set<[String]>()
        for (day, sum) in days {
            try rollup.execute(arguments: [day.tenant, day.license, day.feature, day.day, sum.quantity, sum.events])
            features.insert([day.tenant, day.license, day.feature])
        }
        // Quotas: only features that have one cost more than the rollup.
        var alerts: [ComplianceAlert] = []
        let hasQuotas = try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM quota)") ?? false
        guard hasQuotas else { return (accepted, []) }
        for key in features {
            let (tenant, license, feature) = (key[0], key[1], key[2])
            let state = try Quotas.refresh(tenant: tenant, license: license, feature: feature, now: now, in: db)
            let exceeded = try Bool.fetchOne(
                db, sql: "SELECT exceeded FROM quota_state WHERE tenant_id = ? AND license_id = ? AND feature = ?", arguments: [tenant, license, feature]) ?? false
            guard exceeded else { continue }
            // Every event past the quota counts in the open alert.
            let past = days.filter { $0.key.tenant == tenant && $0.key.license == license && $0.key.feature == feature }.reduce(0) { $0 + $1.value.events }
            let current = try Row.fetchOne(
                db, sql: "SELECT feature, period, quota_limit, used, exceeded, period_ends_at FROM quota_state WHERE tenant_id = ? AND license_id = ? AND feature = ?",
                arguments: [tenant, license, feature])!
            let detail = Alerts.quotaDetail(state ?? QuotaState(
                feature: current[0], period: current[1], limit: UInt64(current[2] as Int64), used: UInt64(current[3] as Int64), exceeded: true,
                periodEndsAt: current[5]))
            let alert = try Alerts.raise(tenant: tenant, license: license, rule: .quotaExceeded, count: UInt64(past), detail: detail, now: now, in: db)
            if state?.exceeded == true { alerts.append(alert) }
        }
        return (accepted, alerts)
    }

    /// The license (and tenant) of each event, from validation, scoped to the caller's tenant.
    func resolve(_ events: [UsageEvent], _ call: ServerCall) async throws -> [ResolvedLicense] {
        guard !events.isEmpty else { return [] }
        var metadata = RPCMetadata()
        metadata[RPCMetadata.tenant] = call.metadata[RPCMetadata.tenant]
        let references = events.map { LicenseReference(licenseKey: $0.licenseKey, licenseId: $0.licenseKey.isEmpty ? $0.licenseId : "") }
        let resolved: [ResolvedLicense]
        do {
            resolved = try await validation.call(
                ValidationMethods.resolveLicenses, ResolveLicensesRequest(licenses: references), metadata: metadata, timeout: .seconds(5)).licenses
        } catch let error as RPCError where error.code == .unavailable || error.code == .deadlineExceeded {
            throw RPCError(.unavailable, "usage events are checked against the licenses license-validation knows, and it cannot be reached; retry (event ids make retries safe)")
        }
        guard resolved.count == events.count else { throw RPCError(.internal, "license-validation resolved \(resolved.count) of \(events.count) licenses") }
        return resolved
    }


    /// Usage of a license per feature in [from, to) (default: the last 30 days), with
    /// distinct users and machines, each feature's quota state and the concurrency peaks.
    /// Totals come from the raw events, kept for the retention period.
    public func getUsage(_ request: GetUsageRequest, _ call: ServerCall) async throws -> UsageSummary {
        guard !request.licenseId.isEmpty else { throw RPCError.invalidArgument("license_id is required") }
        let to = request.to == 0 ? clock.now + 1 : request.to
        let from = request.from == 0 ? to - 30 * 86400 : request.from
        guard from < to else { throw RPCError.invalidArgument("from (\(ISODate.format(from))) must be before to (\(ISODate.format(to)))") }
        // Through the gateway, a tenant's own usage only; a local caller sees any.
        let tenant = call.metadata[RPCMetadata.tenant]
        return try await database.read { db in
            var features = try Row.fetchAll(
                db,
                sql: """
                    SELECT feature, SUM(quantity), COUNT(*), COUNT(DISTINCT NULLIF(user, '')), COUNT(DISTINCT NULLIF(machine, '')) FROM usage_event
                    WHERE (? IS NULL OR tenant_id = ?) AND license_id = ? AND occurred_at >= ? AND occurred_at < ? GROUP BY feature ORDER BY feature
                    """,
                arguments: [tenant, tenant, request.licenseId, from, to]
            ).map {
                FeatureUsage(
                    feature: $0[0], quantity: UInt64($0[1] as Int64), events: UInt64($0[2] as Int64),
                    distinctUsers: UInt32(clamping: $0[3] as Int64), distinctMachines: UInt32(clamping: $0[4] as Int64))
            }
            for index in features.indices {
                guard let state = try Row.fetchOne(
                    db, sql: "SELECT quota_limit, period, used, exceeded FROM quota_state WHERE (? IS NULL OR tenant_id = ?) AND license_id = ? AND feature = ?",
                    arguments: [tenant, tenant, request.licenseId, features[index].feature])
                else { continue }
                features[index].quota = UInt64(state[0] as Int64)
                features[index].quotaPeriod = state[1]
                features[index].quotaUsed = UInt64(state[2] as Int64)
                features[index].quotaExceeded = state[3]
            }
            let peaks = try Row.fetchOne(
                db,
                sql: """
                    SELECT COALESCE(MAX(peak_seats), 0), COALESCE(MAX(peak_machines), 0) FROM concurrency_daily
                    WHERE (? IS NULL OR tenant_id = ?) AND license_id = ? AND day >= ? AND day < ?
                    """,
                arguments: [tenant, tenant, request.licenseId, from.floorDiv(86400) * 86400, to])
            return UsageSummary(
                licenseId: request.licenseId, from: from, to: to, features: features,
                peakConcurrent: UInt32(clamping: peaks?[0] as Int64? ?? 0), peakMachines: UInt32(clamping: peaks?[1] as Int64? ?? 0))
        }
    }

    /// GDPR erasure fans out to every service; usage keeps ids and pseudonyms, no personal data.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        EraseCustomerResponse(service: "usage", recordsErased: 0, detail: "holds no personal data")
    }

    /// What usage holds about a customer's licenses (named by the gateway): usage events
    /// (users as pseudonyms), daily figures, quotas and compliance alerts.
    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> CustomerExport {
        try Check.nonEmpty(request.customerId, "customer_id")
        guard request.licenseIds.count <= 10_000 else { throw RPCError.invalidArgument("license_ids: at most 10,000") }
        let tenant = call.metadata[RPCMetadata.tenant]
        let licenses = request.licenseIds
        let sections = try await database.read { db -> CustomerExportSections.Output in
            let inList = CustomerExportSections.placeholders(licenses.count)
            let arguments: StatementArguments = StatementArguments(licenses) + [tenant, tenant]
            var sections = CustomerExportSections()
            try sections.add("usage_events", db, sql: "SELECT * FROM usage_event WHERE license_id IN (\(inList)) AND (? IS NULL OR tenant_id = ?)", arguments: arguments)
            try sections.add("usage_daily", db, sql: "SELECT * FROM usage_daily WHERE license_id IN (\(inList)) AND (? IS NULL OR tenant_id = ?)", arguments: arguments)
            try sections.add("concurrency_daily", db, sql: "SELECT * FROM concurrency_daily WHERE license_id IN (\(inList)) AND (? IS NULL OR tenant_id = ?)", arguments: arguments)
            try sections.add("quota_states", db, sql: "SELECT * FROM quota_state WHERE license_id IN (\(inList)) AND (? IS NULL OR tenant_id = ?)", arguments: arguments)
            try sections.add("alerts", db, sql: "SELECT * FROM alert WHERE license_id IN (\(inList)) AND (? IS NULL OR tenant_id = ?)", arguments: arguments)
            return sections.output
        }
        return CustomerExport(service: "usage", json: sections.json, records: UInt64(sections.records))
    }

}

extension UsageService: LicenseManagerService {
    public static let name = "usage"
    public static var databaseSchema: DatabaseMigrator? { UsageSchema.migrator }
}
