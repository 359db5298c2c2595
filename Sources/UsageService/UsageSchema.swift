import GRDB
import LicensingRuntime

/// Versioned schema of `usage.sqlite`.
enum UsageSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: usage events") { db in
            try db.execute(sql: """
                CREATE TABLE usage_event (
                    event_id TEXT PRIMARY KEY,
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    quantity INTEGER NOT NULL CHECK (quantity > 0),
                    occurred_at INTEGER NOT NULL,
                    received_at INTEGER NOT NULL
                );
                CREATE INDEX usage_by_license ON usage_event(license_id, occurred_at);
                """)
        }
        // Every row belongs to the tenant that recorded it, and event ids are unique per
        // tenant, so one tenant can neither see nor pre-empt another's events.
        migrator.registerMigration("v2: usage events per tenant") { db in
            try db.execute(sql: """
                CREATE TABLE usage_event_v2 (
                    tenant_id TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    quantity INTEGER NOT NULL CHECK (quantity > 0),
                    occurred_at INTEGER NOT NULL,
                    received_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, event_id)
                );
                INSERT INTO usage_event_v2 SELECT 'default', event_id, license_id, feature, quantity, occurred_at, received_at FROM usage_event;
                DROP TABLE usage_event;
                ALTER TABLE usage_event_v2 RENAME TO usage_event;
                CREATE INDEX usage_by_license ON usage_event(tenant_id, license_id, occurred_at);
                """)
        }
        migrator.registerMigration("v3: the named user of an event") { db in
            try db.execute(sql: "ALTER TABLE usage_event ADD COLUMN user TEXT NOT NULL DEFAULT ''")
        }
        // Users are kept as pseudonyms (personal data lives in issuance), machines as the
        // fingerprint's hash. Rollups per day outlive the raw events; quotas, their state,
        // compliance alerts and the windows the rules count in; usage's own feed and the
        // cursor of validation's.
        migrator.registerMigration("v4: rollups, quotas, compliance, feeds") { db in
            try db.execute(sql: """
                UPDATE usage_event SET user = '' WHERE user != '';
                ALTER TABLE usage_event ADD COLUMN machine TEXT NOT NULL DEFAULT '';
                CREATE TABLE usage_daily (
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    quantity INTEGER NOT NULL,
                    events INTEGER NOT NULL,
                    dirty INTEGER NOT NULL DEFAULT 1,
                    PRIMARY KEY (tenant_id, license_id, feature, day)
                );
                INSERT INTO usage_daily (tenant_id, license_id, feature, day, quantity, events)
                    SELECT tenant_id, license_id, feature, occurred_at / 86400 * 86400, SUM(quantity), COUNT(*) FROM usage_event
                    GROUP BY tenant_id, license_id, feature, occurred_at / 86400;
                CREATE INDEX usage_daily_dirty ON usage_daily(dirty) WHERE dirty = 1;
                CREATE TABLE concurrency_daily (
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    peak_seats INTEGER NOT NULL DEFAULT 0,
                    peak_machines INTEGER NOT NULL DEFAULT 0,
                    dirty INTEGER NOT NULL DEFAULT 1,
                    PRIMARY KEY (tenant_id, license_id, day)
                );
                CREATE INDEX concurrency_daily_dirty ON concurrency_daily(dirty) WHERE dirty = 1;
                -- What validation said of each license seen: its tenant, policy and overage.
                CREATE TABLE license_ref (
                    license_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    policy_id TEXT NOT NULL,
                    overage_permille INTEGER NOT NULL
                );
                CREATE INDEX license_ref_by_policy ON license_ref(tenant_id, policy_id);
                CREATE TABLE quota (
                    tenant_id TEXT NOT NULL,
                    scope TEXT NOT NULL CHECK (scope IN ('license', 'policy')),
                    scope_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    quota_limit INTEGER NOT NULL CHECK (quota_limit > 0),
                    period TEXT NOT NULL CHECK (period IN ('day', 'month', 'total')),
                    PRIMARY KEY (tenant_id, scope, scope_id, feature)
                );
                CREATE TABLE quota_state (
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    feature TEXT NOT NULL,
                    period TEXT NOT NULL,
                    quota_limit INTEGER NOT NULL,
                    used INTEGER NOT NULL,
                    exceeded INTEGER NOT NULL CHECK (exceeded IN (0, 1)),
                    period_ends_at INTEGER NOT NULL,
                    dirty INTEGER NOT NULL DEFAULT 1,
                    PRIMARY KEY (tenant_id, license_id, feature)
                );
                CREATE TABLE alert (
                    id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    rule TEXT NOT NULL,
                    reason INTEGER NOT NULL,
                    detail TEXT NOT NULL,
                    first_at INTEGER NOT NULL,
                    last_at INTEGER NOT NULL,
                    count INTEGER NOT NULL CHECK (count > 0),
                    acknowledged_by TEXT NOT NULL DEFAULT '',
                    acknowledged_at INTEGER,
                    dirty INTEGER NOT NULL DEFAULT 1
                );
                -- One open alert per license and rule: a storm of triggers counts in it.
                CREATE UNIQUE INDEX alert_open ON alert(tenant_id, license_id, rule) WHERE acknowledged_at IS NULL;
                CREATE INDEX alert_by_license ON alert(tenant_id, license_id, id);
                CREATE INDEX alert_dirty ON alert(dirty) WHERE dirty = 1;
                CREATE TABLE rule_window (
                    tenant_id TEXT NOT NULL,
                    license_id TEXT NOT NULL,
                    rule TEXT NOT NULL,
                    window_start INTEGER NOT NULL,
                    value INTEGER NOT NULL,
                    PRIMARY KEY (tenant_id, license_id, rule, window_start)
                );
                CREATE TABLE distinct_seen (
                    license_id TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    value TEXT NOT NULL,
                    UNIQUE (license_id, day, kind, value)
                );
                """)
            try db.execute(sql: FeedCursor.createTable)
            try UsageFeed.journal.create(in: db)
        }
        return migrator
    }
}
