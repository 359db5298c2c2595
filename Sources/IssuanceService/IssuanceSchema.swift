import GRDB

/// Versioned schema of `issuance.sqlite`. Rules that keep the data true live here as
/// constraints, not only in Swift.
enum IssuanceSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: catalogue, customers, licenses, change feed") { db in
            try db.execute(sql: """
                CREATE TABLE product (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    name TEXT NOT NULL CHECK (length(name) > 0),
                    code TEXT NOT NULL CHECK (length(code) > 0),
                    description TEXT NOT NULL DEFAULT '',
                    created_at INTEGER NOT NULL,
                    UNIQUE (tenant_id, code)
                );
                CREATE TABLE policy (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    product_id TEXT NOT NULL REFERENCES product(id),
                    name TEXT NOT NULL CHECK (length(name) > 0),
                    license_type INTEGER NOT NULL CHECK (license_type BETWEEN 1 AND 4),
                    duration_seconds INTEGER NOT NULL CHECK (duration_seconds >= 0),
                    grace_seconds INTEGER NOT NULL CHECK (grace_seconds >= 0),
                    max_machines INTEGER NOT NULL CHECK (max_machines >= 0),
                    max_users INTEGER NOT NULL CHECK (max_users >= 0),
                    max_seats INTEGER NOT NULL CHECK (max_seats >= 0),
                    features TEXT NOT NULL DEFAULT '',
                    allowed_regions TEXT NOT NULL DEFAULT '',
                    denied_regions TEXT NOT NULL DEFAULT '',
                    check_in_interval_seconds INTEGER NOT NULL CHECK (check_in_interval_seconds >= 0),
                    overage_permille INTEGER NOT NULL CHECK (overage_permille BETWEEN 1000 AND 10000),
                    created_at INTEGER NOT NULL
                );
                CREATE INDEX policy_by_product ON policy(product_id);
                CREATE TABLE customer (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    name TEXT NOT NULL CHECK (length(name) > 0),
                    email TEXT NOT NULL DEFAULT '',
                    crm_id TEXT NOT NULL DEFAULT '',
                    enterprise INTEGER NOT NULL DEFAULT 0 CHECK (enterprise IN (0, 1)),
                    created_at INTEGER NOT NULL
                );
                CREATE INDEX customer_by_crm ON customer(tenant_id, crm_id);
                CREATE TABLE license (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    product_id TEXT NOT NULL REFERENCES product(id),
                    policy_id TEXT NOT NULL REFERENCES policy(id),
                    customer_id TEXT NOT NULL REFERENCES customer(id),
                    department_id TEXT NOT NULL DEFAULT '',
                    license_type INTEGER NOT NULL CHECK (license_type BETWEEN 1 AND 4),
                    state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 5),
                    state_reason TEXT NOT NULL DEFAULT '',
                    key_hash TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64),
                    key_prefix TEXT NOT NULL,
                    issued_at INTEGER NOT NULL,
                    starts_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL CHECK (expires_at = 0 OR expires_at > starts_at),
                    grace_seconds INTEGER NOT NULL CHECK (grace_seconds >= 0),
                    max_machines INTEGER NOT NULL CHECK (max_machines >= 0),
                    max_users INTEGER NOT NULL CHECK (max_users >= 0),
                    max_seats INTEGER NOT NULL CHECK (max_seats >= 0),
                    features TEXT NOT NULL DEFAULT '',
                    allowed_regions TEXT NOT NULL DEFAULT '',
                    denied_regions TEXT NOT NULL DEFAULT '',
                    overage_permille INTEGER NOT NULL CHECK (overage_permille BETWEEN 1000 AND 10000),
                    check_in_interval_seconds INTEGER NOT NULL CHECK (check_in_interval_seconds >= 0),
                    updated_at INTEGER NOT NULL
                );
                CREATE INDEX license_by_customer ON license(tenant_id, customer_id);
                CREATE INDEX license_by_product ON license(tenant_id, product_id);
                CREATE INDEX license_by_expiry ON license(tenant_id, expires_at) WHERE expires_at > 0;
                CREATE INDEX license_by_prefix ON license(key_prefix);
                -- The outbox: written in the same transaction as the change it describes.
                CREATE TABLE change_event (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    occurred_at INTEGER NOT NULL,
                    event BLOB NOT NULL
                );
                """)
        }
        return migrator
    }
}
