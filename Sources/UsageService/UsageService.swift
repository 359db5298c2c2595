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
public final class UsageService: Sendable {
    let database: DatabasePool
    let clock: any LicenseClock
    let logger: Logger

    public init(database: DatabasePool, clock: any LicenseClock = SystemLicenseClock(), logger: Logger) {
        self.database = database
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
        return try ServiceDatabase.open(path: path, durability: .full, migrator: migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let service = UsageService(database: try openDatabase(path: environment.databasePath), logger: environment.logger)
        // Stopped in reverse order: the server first, the checkpoints last.
        return [
            try WALMaintenance(pool: service.database, logger: environment.logger),
            RPCServer(router: service.router(), configuration: try environment.serverConfiguration, logger: environment.logger),
        ]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        HealthReporter(service: "usage").register(in: &router)
        // GDPR erasure fans out to every service; this one keeps no personal data yet.
        router.register(UsageMethods.eraseCustomer) { request, _ in
            EraseCustomerResponse(service: "usage", recordsErased: 0, detail: "holds no personal data")
        }
        router.register(UsageMethods.recordUsage) { try await self.recordUsage($0, $1) }
        router.register(UsageMethods.getUsage) { try await self.getUsage($0, $1) }
        return router
    }

    /// Records a batch of events in one transaction, acknowledged once it is on disk. An
    /// event id seen before is counted as a duplicate, not again, so clients may retry.
    func recordUsage(_ request: RecordUsageRequest, _ call: ServerCall) async throws -> RecordUsageResponse {
        guard !request.events.isEmpty else { throw RPCError.invalidArgument("events is empty") }
        guard request.events.count <= 1000 else { throw RPCError.invalidArgument("at most 1000 events per call, got \(request.events.count)") }
        let now = clock.now
        let tenant = Self.tenant(call)
        for (index, event) in request.events.enumerated() {
            guard !event.eventId.isEmpty, event.eventId.count <= 200 else { throw RPCError.invalidArgument("events[\(index)].event_id is required (at most 200 characters)") }
            guard !event.licenseId.isEmpty else { throw RPCError.invalidArgument("events[\(index)].license_id is required") }
            guard !event.feature.isEmpty, event.feature.count <= 64 else { throw RPCError.invalidArgument("events[\(index)].feature is required (at most 64 characters)") }
            guard event.quantity > 0, event.quantity <= UInt64(Int64.max) else { throw RPCError.invalidArgument("events[\(index)].quantity must be positive") }
        }
        let accepted = try await database.write { db -> Int in
            let insert = try db.cachedStatement(sql: """
                INSERT OR IGNORE INTO usage_event (tenant_id, event_id, license_id, feature, quantity, occurred_at, received_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """)
            var accepted = 0
            for event in request.events {
                try insert.execute(arguments: [tenant, event.eventId, event.licenseId, event.feature, Int64(event.quantity), event.occurredAt == 0 ? now : event.occurredAt, now])
                accepted += db.changesCount
            }
            return accepted
        }
        return RecordUsageResponse(accepted: UInt32(accepted), duplicates: UInt32(request.events.count - accepted))
    }

    /// The tenant a call acts for, as the gateway stated it; local callers act for "default".
    static func tenant(_ call: ServerCall) -> String {
        call.metadata[RPCMetadata.tenant] ?? "default"
    }

    /// Usage of a license per feature in [from, to) (default: the last 30 days).
    func getUsage(_ request: GetUsageRequest, _ call: ServerCall) async throws -> UsageSummary {
        guard !request.licenseId.isEmpty else { throw RPCError.invalidArgument("license_id is required") }
        let to = request.to == 0 ? clock.now + 1 : request.to
        let from = request.from == 0 ? to - 30 * 86400 : request.from
        guard from < to else { throw RPCError.invalidArgument("from must be before to") }
        let features = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT feature, SUM(quantity) AS quantity, COUNT(*) AS events FROM usage_event
                    WHERE tenant_id = ? AND license_id = ? AND occurred_at >= ? AND occurred_at < ? GROUP BY feature ORDER BY feature
                    """,
                arguments: [Self.tenant(call), request.licenseId, from, to]
            ).map { FeatureUsage(feature: $0["feature"], quantity: UInt64($0["quantity"] as Int64), events: UInt64($0["events"] as Int64)) }
        }
        return UsageSummary(licenseId: request.licenseId, from: from, to: to, features: features)
    }
}
