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
        migrator.registerMigration("v2: departments, named users, subscriptions, signing keys, idempotency, audit log") { db in
            try db.execute(sql: """
                CREATE TABLE department (
                    id TEXT PRIMARY KEY,
                    customer_id TEXT NOT NULL REFERENCES customer(id) ON DELETE CASCADE,
                    name TEXT NOT NULL CHECK (length(name) > 0),
                    cost_center TEXT NOT NULL DEFAULT '',
                    max_seats INTEGER NOT NULL CHECK (max_seats >= 0),
                    max_machines INTEGER NOT NULL CHECK (max_machines >= 0),
                    UNIQUE (customer_id, name)
                );
                CREATE TABLE license_user (
                    license_id TEXT NOT NULL REFERENCES license(id),
                    user TEXT NOT NULL CHECK (length(user) > 0),
                    assigned_at INTEGER NOT NULL,
                    PRIMARY KEY (license_id, user)
                );
                CREATE TABLE subscription (
                    id TEXT PRIMARY KEY,
                    license_id TEXT NOT NULL UNIQUE REFERENCES license(id),
                    tenant_id TEXT NOT NULL,
                    billing_ref TEXT NOT NULL CHECK (length(billing_ref) > 0),
                    period_start INTEGER NOT NULL,
                    period_end INTEGER NOT NULL CHECK (period_end > period_start),
                    status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 3),
                    auto_renew INTEGER NOT NULL CHECK (auto_renew IN (0, 1)),
                    amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0),
                    currency TEXT NOT NULL DEFAULT '',
                    UNIQUE (tenant_id, billing_ref)
                );
                CREATE TABLE payment (
                    payment_id TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    subscription_id TEXT NOT NULL REFERENCES subscription(id),
                    period_start INTEGER NOT NULL,
                    period_end INTEGER NOT NULL CHECK (period_end > period_start),
                    amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0),
                    currency TEXT NOT NULL,
                    recorded_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, payment_id)
                );
                CREATE TABLE signing_key (
                    kid TEXT PRIMARY KEY,
                    algorithm TEXT NOT NULL CHECK (algorithm = 'Ed25519'),
                    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
                    -- AES-256-GCM under the master key; never the key in clear.
                    sealed_private_key BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    retired_at INTEGER NOT NULL DEFAULT 0,
                    current INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1)),
                    CHECK (NOT (current = 1 AND retired_at > 0))
                );
                CREATE UNIQUE INDEX one_current_signing_key ON signing_key(current) WHERE current = 1;
                CREATE TABLE idempotency (
                    tenant_id TEXT NOT NULL,
                    key TEXT NOT NULL,
                    method TEXT NOT NULL,
                    request_digest TEXT NOT NULL,
                    response BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, key)
                );
                CREATE INDEX idempotency_by_expiry ON idempotency(expires_at);
                CREATE TABLE audit_event (
                    seq INTEGER PRIMARY KEY,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    target TEXT NOT NULL,
                    request_digest TEXT NOT NULL,
                    occurred_at INTEGER NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                );
                -- Append-only: the service never changes or removes an audit row.
                CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
                    BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
                CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
                    BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
                """)
        }
        migrator.registerMigration("v3: audit rows carry their tenant; idempotent answers sealed") { db in
            try db.execute(sql: """
                ALTER TABLE audit_event ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
                CREATE INDEX audit_by_tenant ON audit_event(tenant_id, seq);
                -- 0: a row written before answers were sealed; sealed at the next start (IdempotencyStore).
                ALTER TABLE idempotency ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
                """)
        }
        migrator.registerMigration("v4: keys sealed for one reveal") { db in
            try db.execute(sql: """
                -- A purchased license's key until the buyer reveals it once (KeyReveal),
                -- encrypted under a key only the buyer's link carries; its token is stored
                -- only as a hash.
                CREATE TABLE sealed_key (
                    token_hash TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    sealed BLOB NOT NULL,
                    expires_at INTEGER NOT NULL
                );
                CREATE INDEX sealed_key_by_license ON sealed_key(license_id);
                -- A license's timeline in the console.
                CREATE INDEX audit_by_target ON audit_event(target, seq);
                """)
        }
        // The change feed's epoch: a restored database gets a new one (licensectl restore),
        // so followers know the feed went back and follow it again.
        migrator.registerMigration("v5: change feed epoch") { db in
            // since_seq: the feed's last sequence when this epoch began (a restore's point).
            try db.execute(sql: "CREATE TABLE feed_epoch (epoch TEXT NOT NULL, since_seq INTEGER NOT NULL DEFAULT 0)")
            try db.execute(sql: "INSERT INTO feed_epoch (epoch) VALUES (lower(hex(randomblob(16))))")
        }
        // Personal data sealed per customer (CustomerVault). Rows written before are moved
        // here marked unsealed (a JSON contact, a "legacy:" user hash) and sealed by the
        // service at its next start, before it serves anything.
        migrator.registerMigration("v6: personal data sealed per customer") { db in
            try db.execute(sql: """
                -- Data keys, wrapped by the master key: one per customer, and the CRM index key.
                CREATE TABLE data_key (
                    owner TEXT PRIMARY KEY,
                    wrapped BLOB NOT NULL,
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE customer_sealed (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    -- Name, e-mail and CRM id under the customer's data key; NULL once erased.
                    contact BLOB,
                    -- Keyed hash of the CRM id, for look-ups.
                    crm_hash TEXT NOT NULL DEFAULT '',
                    enterprise INTEGER NOT NULL DEFAULT 0 CHECK (enterprise IN (0, 1)),
                    created_at INTEGER NOT NULL
                );
                INSERT INTO customer_sealed (id, tenant_id, contact, enterprise, created_at)
                    SELECT id, tenant_id, CASE WHEN name = '(erased)' AND email = '' AND crm_id = '' THEN NULL
                        ELSE CAST(json_object('name', name, 'email', email, 'crm_id', crm_id) AS BLOB) END, enterprise, created_at
                    FROM customer;
                DROP TABLE customer;
                ALTER TABLE customer_sealed RENAME TO customer;
                CREATE INDEX customer_by_crm ON customer(tenant_id, crm_hash) WHERE crm_hash != '';
                CREATE TABLE license_user_sealed (
                    license_id TEXT NOT NULL REFERENCES license(id),
                    -- Keyed hash of the user under the customer's data key; the user sealed with it.
                    user_hash TEXT NOT NULL,
                    user BLOB NOT NULL,
                    -- What the change feed carries (validation compares these).
                    pseudonym TEXT NOT NULL DEFAULT '',
                    assigned_at INTEGER NOT NULL,
                    PRIMARY KEY (license_id, user_hash)
                );
                INSERT INTO license_user_sealed (license_id, user_hash, user, assigned_at)
                    SELECT license_id, 'legacy:' || user, CAST(user AS BLOB), assigned_at FROM license_user;
                DROP TABLE license_user;
                ALTER TABLE license_user_sealed RENAME TO license_user;
                """)
        }
        return migrator
    }
}
