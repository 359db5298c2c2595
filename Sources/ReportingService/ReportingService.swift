import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-reporting: a read model of the whole system, built by following issuance's
/// change feed, validation's event feed and usage's feed (each exactly once and
/// resumably), answering the usage, compliance, revenue and renewal reports and exporting
/// them. It answers from what it has while a source is down; `Health` shows each feed's
/// position.
public final class ReportingService: ReportingServiceProtocol {
    let database: DatabasePool
    let issuance: RPCClient
    let clock: any LicenseClock
    let logger: Logger
    let followers: [any FeedFollowing]
    /// Exports running now and rows they sent.
    public let exports = ExportActivity()

    public struct Options: Sendable {
        /// How often each feed is pulled once caught up.
        public var followInterval: Duration = .milliseconds(500)
        public init() {}
    }

    public init(
        database: DatabasePool, issuance: RPCClient, validation: RPCClient, usage: RPCClient, clock: any LicenseClock = SystemLicenseClock(),
        options: Options = Options(), logger: Logger
    ) {
        self.database = database
        self.issuance = issuance
        self.clock = clock
        self.logger = logger
        let interval = options.followInterval
        let writer = ReadModelWriter(database: database)
        self.followers = [
            FeedFollower<ChangeEvent>(feed: ReadModel.issuanceFeed, database: database, idleInterval: interval, logger: logger) { after in
                let response = try await issuance.call(IssuanceMethods.changes, ChangesRequest(afterSeq: after, limit: 2000), timeout: .seconds(10))
                return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.events.last?.seq ?? after, epoch: response.epoch)
            } apply: { events, cursor, restart in
                try await writer.apply(issuance: events, cursor: cursor, restart: restart)
            },
            FeedFollower<ValidationEvent>(feed: ReadModel.validationFeed, database: database, idleInterval: interval, logger: logger) { after in
                let response = try await validation.call(ValidationMethods.events, FeedRequest(afterSeq: after, limit: 5000), timeout: .seconds(10))
                return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
            } apply: { events, cursor, _ in
                try await writer.apply(validation: events, cursor: cursor)
            },
            FeedFollower<UsageFeedEvent>(feed: ReadModel.usageFeed, database: database, idleInterval: interval, logger: logger) { after in
                let response = try await usage.call(UsageMethods.feed, FeedRequest(afterSeq: after, limit: 5000), timeout: .seconds(10))
                return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
            } apply: { events, cursor, _ in
                try await writer.apply(usage: events, cursor: cursor)
            },
        ]
    }

    /// Everything here is rebuilt from feeds, so `synchronous=NORMAL` is enough. Reports
    /// scan much of the read model and feed pages update it all over: larger page caches
    /// than the other services' (32 MiB for the writer, 8 MiB per reader).
    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .normal, migrator: ReportingSchema.migrator, cacheKiB: (32 * 1024, 8 * 1024))
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        func client(_ name: String) throws -> RPCClient { try environment.peerClient(name) }
        let service = ReportingService(
            database: try openDatabase(path: environment.databasePath), issuance: try client("issuance"), validation: try client("validation"),
            usage: try client("usage"), logger: environment.logger)
        return try service.services(configuration: try environment.serverConfiguration)
    }

    /// The RPC server, the three followers and the checkpoints; stopped in reverse order.
    public func services(configuration: RPCServerConfiguration) throws -> [any Service] {
        [try WALMaintenance(pool: database, logger: logger)] + followers.map { $0 as any Service }
            + [RPCServer(router: router(), configuration: configuration, logger: logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        let followers = self.followers
        HealthReporter(service: "reporting", feeds: { followers.map { $0.position() } }).register(in: &router)
        DatabaseSnapshot(service: "reporting", database: database).register(in: &router)
        registerMethods(with: &router)
        return router
    }

    /// Pulls every feed now (tests, and a report asked for right after a change).
    public func catchUp() async {
        for follower in followers { await follower.catchUp() }
    }

    /// Where each feed stands, for a report's header.
    func header(from: Int64, to: Int64) -> ReportHeader {
        ReportHeader(from: from, to: to, producedAt: clock.now, feeds: followers.map { $0.position() })
    }

    /// GDPR erasure fans out to every service; reporting keeps ids only (names are asked
    /// from issuance when a report is produced, so an erased customer shows as erased).
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        EraseCustomerResponse(service: "reporting", recordsErased: 0, detail: "holds no personal data: customers are ids")
    }

    /// What the read model holds about a customer's licenses: the license facts, its
    /// subscriptions, payments and movements, daily outcomes, activity and usage, alerts.
    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> CustomerExport {
        guard !request.customerId.isEmpty else { throw RPCError.invalidArgument("customer_id is required") }
        let tenant = call.metadata[RPCMetadata.tenant]
        let sections = try await database.read { db -> CustomerExportSections.Output in
            let licenses = try String.fetchAll(
                db, sql: "SELECT id FROM r_license WHERE customer_id = ? AND (? IS NULL OR tenant_id = ?)", arguments: [request.customerId, tenant, tenant])
            let inList = CustomerExportSections.placeholders(licenses.count)
            let arguments = StatementArguments(licenses)
            var sections = CustomerExportSections()
            try sections.add("licenses", db, sql: "SELECT * FROM r_license WHERE id IN (\(inList))", arguments: arguments)
            for table in ["r_subscription", "r_payment", "r_movement", "r_outcome_daily", "r_activity_daily", "r_usage_daily", "r_alert", "r_quota_exceeded"] {
                try sections.add(String(table.dropFirst(2)), db, sql: "SELECT * FROM \(table) WHERE license_id IN (\(inList))", arguments: arguments)
            }
            return sections.output
        }
        return CustomerExport(service: "reporting", json: sections.json, records: UInt64(sections.records))
    }
}

/// A feed follower, whatever its events.
public protocol FeedFollowing: Service, Sendable {
    func position() -> FeedPosition
    func catchUp() async
}

extension FeedFollower: FeedFollowing {}

extension ReportingService: LicenseManagerService {
    public static let name = "reporting"
    public static var databaseSchema: DatabaseMigrator? { ReportingSchema.migrator }
}
