import Synchronization
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging

/// The quotas usage says are used up, applied from usage's feed: validation answers
/// `QUOTA_EXCEEDED` for a license's feature until its period ends (or usage clears it).
/// Kept in memory for the hot path — one dictionary look-up, none while no quota is
/// exceeded — and in `quota_block` with the feed cursor, so a restart resumes where it was.
final class QuotaBlocks: Sendable {
    struct Block: Sendable, Equatable {
        var period: String
        var limit: UInt64
        var used: UInt64
        var until: Int64
    }

    static let feed = "usage"
    private let blocks: Mutex<[String: [String: Block]]>
    private let database: DatabasePool

    init(database: DatabasePool) throws {
        self.database = database
        var loaded: [String: [String: Block]] = [:]
        try database.read { db in
            for row in try Row.fetchAll(db, sql: "SELECT license_id, feature, period, quota_limit, used, until FROM quota_block") {
                loaded[row[0], default: [:]][row[1]] = Block(period: row[2], limit: UInt64(row[3] as Int64), used: UInt64(row[4] as Int64), until: row[5])
            }
        }
        self.blocks = Mutex(loaded)
    }

    /// The block on this license's feature now, if any.
    func block(license: String, feature: String, now: Int64) -> Block? {
        blocks.withLock { blocks in
            guard !blocks.isEmpty, let block = blocks[license]?[feature], block.until == 0 || now < block.until else { return nil }
            return block
        }
    }

    /// Applies quota states from usage's feed with the cursor, in one transaction; a new
    /// epoch (usage started over) forgets every block first.
    func apply(_ events: [UsageFeedEvent], cursor: FeedCursor, restart: Bool) async throws {
        try await database.write { db in
            if restart { try db.execute(sql: "DELETE FROM quota_block") }
            for event in events {
                guard case .quota(let state)? = event.event else { continue }
                if state.exceeded {
                    try db.execute(
                        sql: """
                            INSERT INTO quota_block (license_id, feature, period, quota_limit, used, until) VALUES (?, ?, ?, ?, ?, ?)
                            ON CONFLICT(license_id, feature) DO UPDATE SET period = excluded.period, quota_limit = excluded.quota_limit,
                                used = excluded.used, until = excluded.until
                            """,
                        arguments: [event.licenseId, state.feature, state.period, Int64(clamping: state.limit), Int64(clamping: state.used), state.periodEndsAt])
                } else {
                    try db.execute(sql: "DELETE FROM quota_block WHERE license_id = ? AND feature = ?", arguments: [event.licenseId, state.feature])
                }
            }
            try cursor.store(feed: Self.feed, in: db)
        }
        blocks.withLock { blocks in
            if restart { blocks.removeAll() }
            for event in events {
                guard case .quota(let state)? = event.event else { continue }
                if state.exceeded {
                    blocks[event.licenseId, default: [:]][state.feature] = Block(
                        period: state.period, limit: state.limit, used: state.used, until: state.periodEndsAt)
                } else {
                    blocks[event.licenseId]?[state.feature] = nil
                    if blocks[event.licenseId]?.isEmpty == true { blocks[event.licenseId] = nil }
                }
            }
        }
    }

    /// Follows usage's feed for quota states.
    func follower(usage: RPCClient, idleInterval: Duration, logger: Logging.Logger) -> FeedFollower<UsageFeedEvent> {
        FeedFollower(feed: Self.feed, database: database, idleInterval: idleInterval, logger: logger) { after in
            let response = try await usage.call(UsageMethods.feed, FeedRequest(afterSeq: after, limit: 1000, kinds: ["quota"]), timeout: .seconds(5))
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
        } apply: { events, cursor, restart in
            try await self.apply(events, cursor: cursor, restart: restart)
        }
    }
}
