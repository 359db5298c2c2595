import GRDB
import LicensingRuntime

/// Versioned schema of `integrations.sqlite`. Customers appear as ids only: names and
/// addresses stay in issuance, asked for when they are needed.
enum IntegrationsSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: inbound events, mappings, endpoints, outbox, deliveries") { db in
            try db.execute(sql: """
                -- Each provider event applied once: its id, what became of it.
                CREATE TABLE inbound_event (
                    tenant_id TEXT NOT NULL,
                    source TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    outcome TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    PRIMARY KEY (tenant_id, source, event_id)
                );
                CREATE TABLE inbound_secret (
                    tenant_id TEXT NOT NULL,
                    source TEXT NOT NULL CHECK (source IN ('stripe', 'crm', 'erp')),
                    secret TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    -- 0 while current; a replaced secret is accepted until then.
                    valid_until INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX inbound_secret_by_source ON inbound_secret(tenant_id, source);
                CREATE TABLE price_mapping (
                    tenant_id TEXT NOT NULL,
                    price_id TEXT NOT NULL,
                    policy_id TEXT NOT NULL,
                    PRIMARY KEY (tenant_id, price_id)
                );
                -- Each license's tenant and customer, from issuance's feed.
                CREATE TABLE license_ref (
                    license_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL
                );
                -- What a payment paid for, so a refund finds the license to revoke.
                CREATE TABLE payment_ref (
                    tenant_id TEXT NOT NULL,
                    reference TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    PRIMARY KEY (tenant_id, reference)
                );
                CREATE TABLE webhook_endpoint (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    url TEXT NOT NULL,
                    event_types TEXT NOT NULL,
                    secret TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0,
                    disabled_reason TEXT NOT NULL DEFAULT '',
                    failing_since INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX webhook_endpoint_by_tenant ON webhook_endpoint(tenant_id);
                -- Events to send, written with the feed position they came from.
                CREATE TABLE outbox (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL UNIQUE,
                    tenant_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    customer_id TEXT NOT NULL DEFAULT '',
                    payload TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE delivery (
                    id TEXT PRIMARY KEY,
                    outbox_seq INTEGER NOT NULL REFERENCES outbox(seq),
                    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoint(id),
                    status TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'delivered', 'failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,
                    last_status_code INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT NOT NULL DEFAULT '',
                    last_duration_ms INTEGER NOT NULL DEFAULT 0,
                    delivered_at INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL
                );
                CREATE INDEX delivery_due ON delivery(next_attempt_at) WHERE status IN ('pending', 'retrying');
                CREATE INDEX delivery_by_endpoint ON delivery(endpoint_id, id);
                CREATE TABLE delivery_attempt (
                    delivery_id TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    at INTEGER NOT NULL,
                    status_code INTEGER NOT NULL,
                    duration_ms INTEGER NOT NULL,
                    error TEXT NOT NULL,
                    PRIMARY KEY (delivery_id, attempt)
                );
                """)
            try db.execute(sql: FeedCursor.createTable)
        }
        // Renewal reminders: what integrations knows of each license's expiry (from
        // issuance's feed), each policy's schedule, each reminder step once per expiry.
        migrator.registerMigration("v2: renewal reminders") { db in
            try db.execute(sql: """
                ALTER TABLE license_ref ADD COLUMN policy_id TEXT NOT NULL DEFAULT '';
                ALTER TABLE license_ref ADD COLUMN product_id TEXT NOT NULL DEFAULT '';
                ALTER TABLE license_ref ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE license_ref ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE license_ref ADD COLUMN grace_seconds INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE license_ref ADD COLUMN features TEXT NOT NULL DEFAULT '';
                CREATE INDEX license_ref_by_expiry ON license_ref(expires_at) WHERE expires_at > 0;
                CREATE TABLE renewal_option (
                    tenant_id TEXT NOT NULL,
                    policy_id TEXT NOT NULL,
                    days TEXT NOT NULL,
                    renewal_url TEXT NOT NULL,
                    PRIMARY KEY (tenant_id, policy_id)
                );
                CREATE TABLE reminder (
                    license_id TEXT NOT NULL,
                    step TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    tenant_id TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('sent', 'failed', 'skipped')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    sent_at INTEGER NOT NULL DEFAULT 0,
                    error TEXT NOT NULL DEFAULT '',
                    PRIMARY KEY (license_id, step, expires_at)
                );
                """)
        }
        // A purchase's key-reveal link, held only until the buyer's e-mail is sent.
        migrator.registerMigration("v3: key-reveal e-mails") { db in
            try db.execute(sql: """
                CREATE TABLE key_mail (
                    license_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL,
                    product_id TEXT NOT NULL DEFAULT '',
                    -- Emptied once sent: the link reveals the key, so it is not kept.
                    reveal_token TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    error TEXT NOT NULL DEFAULT '',
                    created_at INTEGER NOT NULL,
                    sent_at INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX key_mail_pending ON key_mail(status) WHERE status = 'pending';
                """)
        }
        return migrator
    }
}
