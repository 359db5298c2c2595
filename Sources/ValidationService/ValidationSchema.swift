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
        migrator.registerMigration("v2: limits, departments, signing keys, machines, seats, validation log") { db in
            try db.execute(sql: """
                ALTER TABLE replica_license ADD COLUMN department_id TEXT NOT NULL DEFAULT '';
                ALTER TABLE replica_license ADD COLUMN named_users TEXT NOT NULL DEFAULT '';
                CREATE TABLE replica_department (
                    id TEXT PRIMARY KEY,
                    customer_id TEXT NOT NULL,
                    max_seats INTEGER NOT NULL,
                    max_machines INTEGER NOT NULL
                );
                -- Sealed under the master key validation shares with issuance.
                CREATE TABLE replica_signing_key (
                    kid TEXT PRIMARY KEY,
                    public_key BLOB NOT NULL,
                    sealed_private_key BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    retired_at INTEGER NOT NULL DEFAULT 0,
                    current INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1))
                );
                CREATE TABLE machine (
                    id TEXT PRIMARY KEY,
                    license_id TEXT NOT NULL,
                    department_id TEXT NOT NULL DEFAULT '',
                    fingerprint_hash TEXT NOT NULL CHECK (length(fingerprint_hash) = 64),
                    name TEXT NOT NULL DEFAULT '',
                    platform TEXT NOT NULL DEFAULT '',
                    first_seen INTEGER NOT NULL,
                    last_seen INTEGER NOT NULL CHECK (last_seen >= first_seen),
                    UNIQUE (license_id, fingerprint_hash)
                );
                CREATE INDEX machine_by_department ON machine(department_id) WHERE department_id != '';
                CREATE TABLE seat_lease (
                    lease_id TEXT PRIMARY KEY,
                    license_id TEXT NOT NULL,
                    department_id TEXT NOT NULL DEFAULT '',
                    client_id TEXT NOT NULL,
                    user TEXT NOT NULL DEFAULT '',
                    acquired_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL CHECK (expires_at > acquired_at),
                    ttl_seconds INTEGER NOT NULL CHECK (ttl_seconds > 0),
                    UNIQUE (license_id, client_id)
                );
                CREATE INDEX seat_lease_by_license ON seat_lease(license_id, expires_at);
                CREATE TABLE seat_queue (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    license_id TEXT NOT NULL,
                    client_id TEXT NOT NULL,
                    user TEXT NOT NULL DEFAULT '',
                    expires_at INTEGER NOT NULL,
                    UNIQUE (license_id, client_id)
                );
                CREATE TABLE validation_log (
                    id INTEGER PRIMARY KEY,
                    occurred_at INTEGER NOT NULL,
                    license_id TEXT NOT NULL,
                    reason INTEGER NOT NULL,
                    fingerprint_hash TEXT NOT NULL,
                    region TEXT NOT NULL,
                    feature TEXT NOT NULL
                );
                CREATE INDEX validation_log_by_license ON validation_log(license_id, occurred_at);
                """)
        }
        // Every validation adds a log row: an index by license put each insert on a random
        // page (about 95% of the log's writes); rows are appended in time order without it.
        // Erasure, rare, scans the log instead.
        migrator.registerMigration("v3: validation log appended without a per-license index") { db in
            try db.execute(sql: "DROP INDEX validation_log_by_license")
        }
        migrator.registerMigration("v4: machines bound by offline license files") { db in
            try db.execute(sql: "ALTER TABLE machine ADD COLUMN offline_until INTEGER NOT NULL DEFAULT 0")
        }
        // Validation's own feed (../DESIGN.md): machines, seats and outcome rollups; the
        // minute the rollups have reached; the quota states usage publishes; cursors that
        // remember their source's epoch; the policy of a license (usage's default quotas).
        migrator.registerMigration("v5: event feed, outcome rollups, quota states") { db in
            try ValidationEvents.journal.create(in: db)
            try db.execute(sql: """
                ALTER TABLE feed_position ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
                ALTER TABLE replica_license ADD COLUMN policy_id TEXT NOT NULL DEFAULT '';
                -- Appended in time order, so the index grows at its right edge only.
                CREATE INDEX validation_log_by_time ON validation_log(occurred_at);
                CREATE TABLE rollup_cursor (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    closed_minute INTEGER NOT NULL
                );
                CREATE TABLE quota_block (
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    period TEXT NOT NULL,
                    quota_limit INTEGER NOT NULL,
                    used INTEGER NOT NULL,
                    until INTEGER NOT NULL,
                    PRIMARY KEY (license_id, feature)
                );
                """)
        }
        // Read replicas: on a primary, how far each replica's shipped log has been stored
        // (so a batch sent twice is stored once); on a replica, the name it ships under.
        migrator.registerMigration("v6: validation read replicas") { db in
            try db.execute(sql: """
                CREATE TABLE replica_log_source (
                    replica_id TEXT PRIMARY KEY,
                    stored_through INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE TABLE replica_identity (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    replica_id TEXT NOT NULL,
                    shipped_through INTEGER NOT NULL
                );
                """)
        }
        return migrator
    }
}
