import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// Usage's feed (../DESIGN.md): daily usage totals, concurrency peaks, quota states and
/// alerts, each the full new state of a row. Rows are marked when they change and
/// published together every `interval`, so a busy license makes one event per interval,
/// not one per usage event or trigger. Quota states go out within that interval, which
/// is how fast validation starts answering QUOTA_EXCEEDED.
final class UsageFeed: Service, Sendable {
    static let journal = FeedJournal(table: "usage_feed")
    private let database: DatabasePool
    private let clock: any LicenseClock
    private let interval: Duration
    private let logger: Logger

    init(database: DatabasePool, clock: any LicenseClock, interval: Duration, logger: Logger) {
        self.database = database
        self.clock = clock
        self.interval = interval
        self.logger = logger
    }

    func run() async throws {
        await Periodically.run(every: interval, last: true) {
            do {
                try await publish()
            } catch {
                logger.notice("usage feed publication failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Publishes every changed row; returns how many events were written.
    @discardableResult
    func publish() async throws -> Int {
        let now = clock.now
        return try await database.write { db in
            // A quota whose period has ended no longer blocks: say so on the feed.
            try db.execute(sql: "UPDATE quota_state SET exceeded = 0, dirty = 1 WHERE exceeded = 1 AND period_ends_at != 0 AND period_ends_at <= ?", arguments: [now])
            var written = 0
            func append(_ kind: String, _ tenant: String, _ license: String, _ event: UsageFeedEvent.Event) throws {
                let payload = UsageFeedEvent(occurredAt: now, tenantId: tenant, licenseId: license, event: event)
                try Self.journal.append(kind: kind, occurredAt: now, tenant: tenant, license: license, payload: payload.serializedBytes(), in: db)
                written += 1
            }
            for row in try Row.fetchAll(db, sql: "SELECT * FROM quota_state WHERE dirty = 1") {
                try append("quota", row["tenant_id"], row["license_id"], .quota(QuotaState(
                    feature: row["feature"], period: row["period"], limit: UInt64(row["quota_limit"] as Int64), used: UInt64(row["used"] as Int64),
                    exceeded: row["exceeded"], periodEndsAt: row["period_ends_at"])))
            }
            try db.execute(sql: "UPDATE quota_state SET dirty = 0 WHERE dirty = 1")
            for row in try Row.fetchAll(db, sql: "SELECT * FROM alert WHERE dirty = 1") {
                try append("alert", row["tenant_id"], row["license_id"], .alert(Alerts.alert(row)))
            }
            try db.execute(sql: "UPDATE alert SET dirty = 0 WHERE dirty = 1")
            for row in try Row.fetchAll(db, sql: "SELECT * FROM usage_daily WHERE dirty = 1") {
                try append("usage", row["tenant_id"], row["license_id"], .usage(DailyUsage(
                    feature: row["feature"], day: row["day"], quantity: UInt64(row["quantity"] as Int64), events: UInt64(row["events"] as Int64))))
            }
            try db.execute(sql: "UPDATE usage_daily SET dirty = 0 WHERE dirty = 1")
            for row in try Row.fetchAll(db, sql: "SELECT * FROM concurrency_daily WHERE dirty = 1") {
                try append("concurrency", row["tenant_id"], row["license_id"], .concurrency(DailyConcurrency(
                    day: row["day"], peakSeats: UInt32(clamping: row["peak_seats"] as Int64), peakMachines: UInt32(clamping: row["peak_machines"] as Int64))))
            }
            try db.execute(sql: "UPDATE concurrency_daily SET dirty = 0 WHERE dirty = 1")
            return written
        }
    }
}

extension UsageService {
    /// Usage's feed, for the services behind the gateway.
    public func feed(_ request: FeedRequest, _ call: ServerCall) async throws -> UsageFeedResponse {
        let page = try await database.read { db in
            try UsageFeed.journal.read(after: request.afterSeq, limit: request.limit, kinds: request.kinds, in: db)
        }
        var events: [UsageFeedEvent] = []
        events.reserveCapacity(page.events.count)
        for (seq, payload) in page.events {
            var event = try UsageFeedEvent(serializedBytes: payload)
            event.seq = seq
            events.append(event)
        }
        return UsageFeedResponse(events: events, lastSeq: page.lastSeq, epoch: page.epoch, nextAfterSeq: page.nextAfter)
    }
}
