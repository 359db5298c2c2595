import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-usage: feature-usage and metering events, quotas, compliance alerts.
/// Records usage events (durably, deduplicated by event id) and sums them per feature;
/// quotas and compliance alerts answer UNIMPLEMENTED until their handlers land.
public final class UsageService: UsageServiceProtocol {
    let database: DatabasePool
    /// license-validation, which resolves the license keys and ids events name.
    let validation: RPCClient
    let clock: any LicenseClock
    let logger: Logger
    /// Batches from many callers commit together: one disk sync for all that arrive at once.
    let committer: GroupCommitter

    public init(database: DatabasePool, validation: RPCClient, clock: any LicenseClock = SystemLicenseClock(), logger: Logger) {
        self.database = database
        self.committer = GroupCommitter(database: database, name: "usage")
        self.validation = validation
        self.clock = clock
        self.logger = logger
    }

    /// Usage events are acknowledged only once durable, so the database syncs fully.
    public static func openDatabase(path: String) throws -> DatabasePool {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: usage events") { db in
            try db.execute(sql: """
                CREATE TABLE usage_event (
                    event_id TEXT PRIMARY KEY,
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    quantity INTEGER NOT NULL CHECK (quantity > 0),
                    occurred_at INTEGER NOT NULL,
                    received_at INTEGER NOT NULL
                );
                CREATE INDEX usage_by_license ON usage_event(license_id, occurred_at);
                """)
        }
        // Every row belongs to the tenant that recorded it, and event ids are unique per
        // tenant, so one tenant can neither see nor pre-empt another's events.
        migrator.registerMigration("v2: usage events per tenant") { db in
            try db.execute(sql: """
                CREATE TABLE usage_event_v2 (
                    tenant_id TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    quantity INTEGER NOT NULL CHECK (quantity > 0),
                    occurred_at INTEGER NOT NULL,
                    received_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, event_id)
                );
                INSERT INTO usage_event_v2 SELECT 'default', event_id, license_id, feature, quantity, occurred_at, received_at FROM usage_event;
                DROP TABLE usage_event;
                ALTER TABLE usage_event_v2 RENAME TO usage_event;
                CREATE INDEX usage_by_license ON usage_event(tenant_id, license_id, occurred_at);
                """)
        }
        migrator.registerMigration("v3: the named user of an event") { db in
            try db.execute(sql: "ALTER TABLE usage_event ADD COLUMN user TEXT NOT NULL DEFAULT ''")
        }
        return try ServiceDatabase.open(path: path, durability: .full, migrator: migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let validation = RPCClient(endpoint: try environment.settings.endpoint("validation", default: environment.settings.defaultSocket("validation")))
        let service = UsageService(database: try openDatabase(path: environment.databasePath), validation: validation, logger: environment.logger)
        // Stopped in reverse order: the server first, the checkpoints last.
        return [
            try WALMaintenance(pool: service.database, logger: environment.logger),
            RPCServer(router: service.router(), configuration: try environment.serverConfiguration, logger: environment.logger),
        ]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        HealthReporter(service: "usage").register(in: &router)
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
        let rows = recordable
        let accepted = rows.isEmpty ? 0 : try await committer.write { db -> Int in
            let insert = try db.cachedStatement(sql: """
                INSERT OR IGNORE INTO usage_event (tenant_id, event_id, license_id, feature, quantity, occurred_at, received_at, user)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """)
            var accepted = 0
            for (event, license) in rows {
                try insert.execute(arguments: [
                    license.tenantId, event.eventId, license.licenseId, event.feature, Int64(event.quantity),
                    event.occurredAt == 0 ? now : event.occurredAt, now, event.user,
                ])
                accepted += db.changesCount
            }
            return accepted
        }
        return RecordUsageResponse(
            accepted: UInt32(accepted), duplicates: UInt32(recordable.count - accepted), rejected: rejected.sorted { $0.index < $1.index })
    }

    /// The license (and tenant) of each event, from validation, scoped to the caller's tenant.
    private func resolve(_ events: [UsageEvent], _ call: ServerCall) async throws -> [ResolvedLicense] {
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


    /// Usage of a license per feature in [from, to) (default: the last 30 days).
    public func getUsage(_ request: GetUsageRequest, _ call: ServerCall) async throws -> UsageSummary {
        guard !request.licenseId.isEmpty else { throw RPCError.invalidArgument("license_id is required") }
        let to = request.to == 0 ? clock.now + 1 : request.to
        let from = request.from == 0 ? to - 30 * 86400 : request.from
        guard from < to else { throw RPCError.invalidArgument("from must be before to") }
        // Through the gateway, a tenant's own usage only; a local caller sees any.
        let tenant = call.metadata[RPCMetadata.tenant]
        let features = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT feature, SUM(quantity) AS quantity, COUNT(*) AS events FROM usage_event
                    WHERE (? IS NULL OR tenant_id = ?) AND license_id = ? AND occurred_at >= ? AND occurred_at < ? GROUP BY feature ORDER BY feature
                    """,
                arguments: [tenant, tenant, request.licenseId, from, to]
            ).map { FeatureUsage(feature: $0["feature"], quantity: UInt64($0["quantity"] as Int64), events: UInt64($0["events"] as Int64)) }
        }
        return UsageSummary(licenseId: request.licenseId, from: from, to: to, features: features)
    }

    /// GDPR erasure fans out to every service; usage keeps ids, no personal data.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        EraseCustomerResponse(service: "usage", recordsErased: 0, detail: "holds no personal data")
    }

    // Quotas, compliance alerts and usage's feed come with usage-and-compliance monitoring;
    // until then they say so.
    public func setQuota(_ request: SetQuotaRequest, _ call: ServerCall) async throws -> Quota {
        throw RPCError.unimplemented(call.method)
    }

    public func listAlerts(_ request: ListAlertsRequest, _ call: ServerCall) async throws -> ListAlertsResponse {
        throw RPCError.unimplemented(call.method)
    }

    public func acknowledgeAlert(_ request: GetByIdRequest, _ call: ServerCall) async throws -> ComplianceAlert {
        throw RPCError.unimplemented(call.method)
    }

    public func changes(_ request: ChangesRequest, _ call: ServerCall) async throws -> UsageChangesResponse {
        throw RPCError.unimplemented(call.method)
    }
}

extension UsageService: LicenseManagerService {
    public static let name = "usage"
}
