import Foundation
import GRDB

/// The customers erased, kept in their own small database beside `issuance.sqlite`
/// (`issuance-erasures.sqlite`), so restoring the data to an older point cannot roll it
/// back. An erasure is written here first, durably, and then carried out; every start of
/// issuance replays the list, so a restored backup or a crash between the two never brings
/// an erased customer back. Backups carry a copy, and a restore (licensectl) only adds to
/// the list.
public struct ErasureLedger: Sendable {
    public let queue: DatabaseQueue

    public struct Entry: Sendable, Equatable {
        public let tenant: String
        public let customer: String
        public let erasedAt: Int64

        public init(tenant: String, customer: String, erasedAt: Int64) {
            self.tenant = tenant
            self.customer = customer
            self.erasedAt = erasedAt
        }
    }

    public static func path(besides databasePath: String) -> String {
        let base = databasePath.hasSuffix(".sqlite") ? String(databasePath.dropLast(".sqlite".count)) : databasePath
        return base + "-erasures.sqlite"
    }

    public init(path: String) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        queue = try DatabaseQueue(path: path, configuration: configuration)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: erased customers") { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS erased_customer (
                    tenant_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL,
                    erased_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, customer_id)
                );
                """)
        }
        try migrator.migrate(queue)
    }

    /// Durable before it returns (synchronous=FULL); recording a customer twice keeps the first time.
    public func record(_ entry: Entry) throws {
        try queue.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO erased_customer (tenant_id, customer_id, erased_at) VALUES (?, ?, ?)",
                arguments: [entry.tenant, entry.customer, entry.erasedAt])
        }
    }

    public func entries() throws -> [Entry] {
        try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT tenant_id, customer_id, erased_at FROM erased_customer ORDER BY erased_at, customer_id").map {
                Entry(tenant: $0[0], customer: $0[1], erasedAt: $0[2])
            }
        }
    }

    /// Adds a backup's list to this one (a restore never shortens it). Returns how many were new.
    @discardableResult
    public func merge(_ entries: [Entry]) throws -> Int {
        try queue.write { db in
            var added = 0
            for entry in entries {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO erased_customer (tenant_id, customer_id, erased_at) VALUES (?, ?, ?)",
                    arguments: [entry.tenant, entry.customer, entry.erasedAt])
                added += db.changesCount
            }
            return added
        }
    }
}
