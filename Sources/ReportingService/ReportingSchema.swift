import GRDB
import LicensingRuntime

/// Versioned schema of `reporting.sqlite`: a read model of the other services' feeds,
/// shaped for the reports. Every table is rebuilt from the feeds; nothing here is personal
/// data (customers are ids; names are resolved from issuance when a report is produced).
enum ReportingSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: feed positions") { db in
            try db.execute(sql: """
                CREATE TABLE feed_position (
                    feed TEXT PRIMARY KEY,
                    applied_seq INTEGER NOT NULL CHECK (applied_seq >= 0)
                );
                """)
        }
        migrator.registerMigration("v2: the read model") { db in
            try db.execute(sql: """
                ALTER TABLE feed_position ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
                CREATE TABLE r_product (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    code TEXT NOT NULL
                );
                CREATE TABLE r_license (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    product_id TEXT NOT NULL,
                    policy_id TEXT NOT NULL,
                    customer_id TEXT NOT NULL,
                    state INTEGER NOT NULL,
                    issued_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    grace_seconds INTEGER NOT NULL,
                    max_machines INTEGER NOT NULL,
                    max_seats INTEGER NOT NULL,
                    overage_permille INTEGER NOT NULL
                );
                -- Machines active now, from validation's feed: apart from r_license, whose row
                -- may arrive later (the feeds are followed independently).
                CREATE TABLE r_machines (
                    license_id TEXT PRIMARY KEY,
                    active INTEGER NOT NULL
                );
                CREATE INDEX r_license_by_product ON r_license(tenant_id, product_id, id);
                CREATE INDEX r_license_by_customer ON r_license(customer_id, tenant_id);
                CREATE INDEX r_license_by_expiry ON r_license(tenant_id, expires_at) WHERE expires_at > 0;
                CREATE TABLE r_subscription (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    status INTEGER NOT NULL,
                    auto_renew INTEGER NOT NULL,
                    period_start INTEGER NOT NULL,
                    period_end INTEGER NOT NULL,
                    amount_minor INTEGER NOT NULL,
                    currency TEXT NOT NULL,
                    payments INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX r_subscription_by_license ON r_subscription(license_id);
                CREATE TABLE r_payment (
                    seq INTEGER PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    subscription_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    paid_at INTEGER NOT NULL,
                    amount_minor INTEGER NOT NULL,
                    currency TEXT NOT NULL
                );
                CREATE INDEX r_payment_by_time ON r_payment(tenant_id, paid_at);
                -- Subscriptions started, renewed (a paid period after the first), canceled, and
                -- failed payments: one row each.
                CREATE TABLE r_movement (
                    seq INTEGER PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('started', 'renewal', 'churned', 'failed')),
                    at INTEGER NOT NULL
                );
                CREATE INDEX r_movement_by_time ON r_movement(tenant_id, at);
                CREATE TABLE r_outcome_daily (
                    license_id TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    reason INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    PRIMARY KEY (license_id, day, reason)
                ) WITHOUT ROWID;
                CREATE TABLE r_activity_daily (
                    license_id TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    peak_seats INTEGER NOT NULL DEFAULT 0,
                    peak_machines INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (license_id, day)
                ) WITHOUT ROWID;
                CREATE TABLE r_usage_daily (
                    license_id TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    feature TEXT NOT NULL,
                    quantity INTEGER NOT NULL,
                    events INTEGER NOT NULL,
                    PRIMARY KEY (license_id, day, feature)
                ) WITHOUT ROWID;
                -- Days on which a quota of the license was past its limit.
                CREATE TABLE r_quota_exceeded (
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    PRIMARY KEY (license_id, day, feature)
                ) WITHOUT ROWID;
                CREATE TABLE r_alert (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    rule TEXT NOT NULL,
                    reason INTEGER NOT NULL,
                    detail TEXT NOT NULL,
                    first_at INTEGER NOT NULL,
                    last_at INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    acknowledged INTEGER NOT NULL
                );
                CREATE INDEX r_alert_by_time ON r_alert(tenant_id, last_at);
                CREATE INDEX r_alert_by_license ON r_alert(license_id);
                """)
        }
        return migrator
    }
}
