import Foundation
import GRDB
import LicensingWire

/// Issuance's change feed: every state change is an event appended in the same
/// transaction as the change (an outbox), so a consumer never sees one without the other.
enum ChangeFeed {
    /// Appends an event; returns its position in the feed.
    @discardableResult
    static func append(_ event: ChangeEvent, at time: Int64, in db: Database) throws -> UInt64 {
        var event = event
        event.occurredAt = time
        try db.execute(
            sql: "INSERT INTO change_event (occurred_at, event) VALUES (?, ?)",
            arguments: [time, Data(event.serializedBytes())])
        return UInt64(db.lastInsertedRowID)
    }

    static func read(after seq: UInt64, limit: Int, in db: Database) throws -> [ChangeEvent] {
        let rows = try Row.fetchAll(
            db, sql: "SELECT seq, event FROM change_event WHERE seq > ? ORDER BY seq LIMIT ?",
            arguments: [Int64(clamping: seq), limit])
        return try rows.map { row in
            let bytes: Data = row["event"]
            var event = try ChangeEvent(serializedBytes: Array(bytes))
            event.seq = UInt64(row["seq"] as Int64)
            return event
        }
    }

    /// A new epoch: followers drop what they derived from the feed and read it again
    /// (after a restore took it back, or history was rewritten).
    static func beginEpoch(in db: Database) throws {
        try db.execute(sql: "UPDATE feed_epoch SET epoch = lower(hex(randomblob(16))), since_seq = (SELECT COALESCE(MAX(seq), 0) FROM change_event)")
    }

    static func lastSeq(in db: Database) throws -> UInt64 {
        UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM change_event") ?? 0)
    }
}

extension ChangeEvent {
    /// An event about `subject`; `kind` names the same case, for consumers that read it.
    init(action: String, _ subject: Subject, keyHash: String = "") {
        let kind: ChangeKind
        switch subject {
        case .license: kind = .license
        case .product: kind = .product
        case .policy: kind = .policy
        case .subscription: kind = .subscription
        case .customer: kind = .customer
        case .department: kind = .department
        case .signingKey: kind = .signingKey
        }
        self.init(kind: kind, action: action, keyHash: keyHash, subject: subject)
    }
}
