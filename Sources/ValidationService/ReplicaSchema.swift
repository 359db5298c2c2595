import GRDB

/// Versioned schema of `validation.sqlite`: the replica of license facts validation needs,
/// and where it stands in issuance's change feed.
enum ValidationSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: license replica and feed position") { db in
            try db.execute(sql: """
                CREATE TABLE replica_license (
                    license_id TEXT PRIMARY KEY,
                    key_hash TEXT NOT NULL UNIQUE,
                    tenant_id TEXT NOT NULL,
                    product_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL,
                    license_type INTEGER NOT NULL,
                    state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 5),
                    starts_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    grace_seconds INTEGER NOT NULL,
                    max_machines INTEGER NOT NULL,
                    max_users INTEGER NOT NULL,
                    max_seats INTEGER NOT NULL,
                    overage_permille INTEGER NOT NULL,
                    features TEXT NOT NULL,
                    allowed_regions TEXT NOT NULL,
                    denied_regions TEXT NOT NULL,
                    applied_seq INTEGER NOT NULL
                );
                -- Written in the same transaction as the events it counts: exactly-once apply.
                CREATE TABLE feed_position (
                    feed TEXT PRIMARY KEY,
                    applied_seq INTEGER NOT NULL CHECK (applied_seq >= 0)
                );
                """)
        }
        return migrator
    }
}
