import Foundation
import GRDB

/// A service's outgoing feed (../DESIGN.md, "one contract for all"): typed events appended
/// in the same transaction as the change they record, each with a sequence number, read by
/// followers from any position. The epoch names this database's history: a follower that
/// sees a new one knows the source started over and re-syncs.
public struct FeedJournal: Sendable {
    /// The table of the events (`validation_event`, `usage_feed`).
    public let table: String

    public init(table: String) {
        self.table = table
    }

    /// Creates the table and this database's epoch; run once, in a migration.
    public func create(in db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE \(table) (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                occurred_at INTEGER NOT NULL,
                tenant_id TEXT NOT NULL,
                license_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                payload BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS feed_epoch (
                feed TEXT PRIMARY KEY,
                epoch TEXT NOT NULL
            );
            """)
        try db.execute(sql: "INSERT INTO feed_epoch (feed, epoch) VALUES (?, ?)", arguments: [table, UUID().uuidString.lowercased()])
    }

    /// Appends one event; its sequence number is assigned on insert.
    public func append(kind: String, occurredAt: Int64, tenant: String, license: String, payload: [UInt8], in db: Database) throws {
        let insert = try db.cachedStatement(sql: "INSERT INTO \(table) (occurred_at, tenant_id, license_id, kind, payload) VALUES (?, ?, ?, ?, ?)")
        try insert.execute(arguments: [occurredAt, tenant, license, kind, Data(payload)])
    }

    /// The highest sequence written and this database's epoch: where a follower that loaded
    /// a snapshot in the same transaction goes on from.
    public func head(in db: Database) throws -> (lastSeq: UInt64, epoch: String) {
        let lastSeq = UInt64(try Int64.fetchOne(db, sql: "SELECT seq FROM \(table) ORDER BY seq DESC LIMIT 1") ?? 0)
        let epoch = try String.fetchOne(db, sql: "SELECT epoch FROM feed_epoch WHERE feed = ?", arguments: [table]) ?? ""
        return (lastSeq, epoch)
    }

    public struct Page: Sendable {
        public var events: [(seq: UInt64, payload: [UInt8])]
        /// The highest sequence written.
        public var lastSeq: UInt64
        /// Where the follower asks from next: past events the kind filter skipped.
        public var nextAfter: UInt64
        public var epoch: String
    }

    /// Events after `after`, at most `limit` (0 = 500, capped at 5000), of the given kinds
    /// (empty = all). The scan stops after `limit` events or `limit * 20` rows skipped.
    public func read(after: UInt64, limit: UInt32, kinds: [String], in db: Database) throws -> Page {
        let limit = limit == 0 ? 500 : Int(min(limit, 5000))
        let (lastSeq, epoch) = try head(in: db)
        let start = Int64(clamping: after)
        var events: [(seq: UInt64, payload: [UInt8])] = []
        var nextAfter = after
        if kinds.isEmpty {
            let rows = try Row.fetchAll(db, sql: "SELECT seq, payload FROM \(table) WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [start, limit])
            for row in rows { events.append((UInt64(row[0] as Int64), [UInt8](row[1] as Data))) }
            nextAfter = events.last?.seq ?? after
        } else {
            let wanted = Set(kinds)
            let scanned = try Row.fetchAll(
                db, sql: "SELECT seq, kind, payload FROM \(table) WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [start, limit * 20])
            for row in scanned {
                let seq = UInt64(row[0] as Int64)
                if wanted.contains(row[1] as String) {
                    events.append((seq, [UInt8](row[2] as Data)))
                }
                nextAfter = seq
                if events.count == limit { break }
            }
        }
        return Page(events: events, lastSeq: max(lastSeq, nextAfter), nextAfter: nextAfter, epoch: epoch)
    }
}
