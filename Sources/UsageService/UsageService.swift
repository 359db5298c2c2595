import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-usage: feature-usage and metering events, quotas, compliance alerts.
/// Serves its health now; the usage RPCs of the contract answer UNIMPLEMENTED until
/// their handlers land.
public final class UsageService: Sendable {
    let database: DatabasePool
    let logger: Logger

    public init(database: DatabasePool, logger: Logger) {
        self.database = database
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
        return try ServiceDatabase.open(path: path, durability: .full, migrator: migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let service = UsageService(database: try openDatabase(path: environment.databasePath), logger: environment.logger)
        return [RPCServer(router: service.router(), configuration: try environment.serverConfiguration, logger: environment.logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        HealthReporter(service: "usage").register(in: &router)
        // GDPR erasure fans out to every service; this one keeps no personal data yet.
        router.register(UsageMethods.eraseCustomer) { request, _ in
            EraseCustomerResponse(service: "usage", recordsErased: 0, detail: "holds no personal data")
        }
        return router
    }
}
