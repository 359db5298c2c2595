import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-reporting: read models built from the other services' feeds. Serves its health
/// now; the report RPCs of the contract answer UNIMPLEMENTED until their handlers land.
public final class ReportingService: ReportingServiceProtocol {
    let database: DatabasePool
    let logger: Logger

    public init(database: DatabasePool, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// Everything here is rebuilt from feeds, so `synchronous=NORMAL` is enough.
    public static func openDatabase(path: String) throws -> DatabasePool {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: feed positions") { db in
            try db.execute(sql: """
                CREATE TABLE feed_position (
                    feed TEXT PRIMARY KEY,
                    applied_seq INTEGER NOT NULL CHECK (applied_seq >= 0)
                );
                """)
        }
        return try ServiceDatabase.open(path: path, durability: .normal, migrator: migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let service = ReportingService(database: try openDatabase(path: environment.databasePath), logger: environment.logger)
        return [RPCServer(router: service.router(), configuration: try environment.serverConfiguration, logger: environment.logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        HealthReporter(service: "reporting").register(in: &router)
        registerMethods(with: &router)
        return router
    }

    /// GDPR erasure fans out to every service; this one keeps no personal data yet.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        EraseCustomerResponse(service: "reporting", recordsErased: 0, detail: "holds no personal data")
    }

    // The reports are built from the feeds in a coming step; until then they say so.
    public func usageReport(_ request: ReportRequest, _ call: ServerCall) async throws -> UsageReportResponse {
        throw RPCError.unimplemented(call.method)
    }

    public func complianceReport(_ request: ReportRequest, _ call: ServerCall) async throws -> ComplianceReportResponse {
        throw RPCError.unimplemented(call.method)
    }

    public func revenueReport(_ request: ReportRequest, _ call: ServerCall) async throws -> RevenueReportResponse {
        throw RPCError.unimplemented(call.method)
    }

    public func renewalPipeline(_ request: ReportRequest, _ call: ServerCall) async throws -> RenewalPipelineResponse {
        throw RPCError.unimplemented(call.method)
    }

    public func export(_ request: ExportRequest, _ call: ServerCall, _ stream: TypedResponseStream<ExportChunk>) async throws {
        throw RPCError.unimplemented(call.method)
    }
}

extension ReportingService: LicenseManagerService {
    public static let name = "reporting"
}
