import GRDB
import LicensingCore
import LicensingRuntime
import LicensingWire

/// Applies the three feeds to the read model. Each page is applied in one transaction with
/// its cursor (exactly once); state events (licenses, subscriptions, daily usage, alerts)
/// replace a row, volume events (validation outcomes, payments) add to one.
enum ReadModel {
    static let issuanceFeed = "issuance"
    static let validationFeed = "validation"
    static let usageFeed = "usage"

    static func day(_ at: Int64) -> Int64 { at >= 0 ? at / 86400 * 86400 : (at - 86399) / 86400 * 86400 }

    // MARK: issuance's change feed

    static func apply(issuance events: [ChangeEvent], in db: Database) throws {
        for event in events {
            switch event.subject {
            case .product(let product)?:
                try db.execute(
                    sql: """
                        INSERT INTO r_product (id, tenant_id, name, code) VALUES (?, ?, ?, ?)
                        ON CONFLICT(id) DO UPDATE SET name = excluded.name, code = excluded.code
                        """,
                    arguments: [product.id, product.tenantId, product.name, product.code])
            case .license(let license)?:
                try db.cachedStatement(sql: """
                    INSERT INTO r_license (id, tenant_id, product_id, policy_id, customer_id, state, issued_at, expires_at, grace_seconds,
                        max_machines, max_seats, overage_permille)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET tenant_id = excluded.tenant_id, product_id = excluded.product_id,
                        policy_id = excluded.policy_id, customer_id = excluded.customer_id, state = excluded.state,
                        expires_at = excluded.expires_at, grace_seconds = excluded.grace_seconds, max_machines = excluded.max_machines,
                        max_seats = excluded.max_seats, overage_permille = excluded.overage_permille
                    """).execute(arguments: [
                    license.id, license.tenantId, license.productId, license.policyId, license.customerId, license.state.rawValue,
                    license.issuedAt, license.expiresAt, license.graceSeconds, license.maxMachines, license.maxSeats, license.overagePermille,
                ])
            case .subscription(let subscription)?:
                try apply(subscription, action: event.action, at: event.occurredAt, seq: event.seq, in: db)
            default:
                // Policies, customers (personal data: names are asked for when a report is
                // produced), departments and signing keys are not reported on.
                break
            }
        }
    }

    private static func apply(_ subscription: Subscription, action: String, at: Int64, seq: UInt64, in db: Database) throws {
        // One look-up for a subscription seen before; its license's tenant for a new one.
        let known = try Row.fetchOne(db.cachedStatement(sql: "SELECT tenant_id, payments FROM r_subscription WHERE id = ?"), arguments: [subscription.id])
        let tenant: String = try known?[0] ?? String.fetchOne(
            db.cachedStatement(sql: "SELECT tenant_id FROM r_license WHERE id = ?"), arguments: [subscription.licenseId]) ?? "default"
        var payments: Int = known?[1] ?? 0
        func movement(_ kind: String) throws {
            try db.cachedStatement(sql: "INSERT INTO r_movement (tenant_id, license_id, kind, at) VALUES (?, ?, ?, ?)")
                .execute(arguments: [tenant, subscription.licenseId, kind, at])
        }
        switch action {
        case "subscription.started":
            try movement("started")
        case "subscription.paid":
            try db.cachedStatement(sql: """
                INSERT INTO r_payment (seq, tenant_id, subscription_id, license_id, paid_at, amount_minor, currency) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(seq) DO NOTHING
                """).execute(arguments: [Int64(clamping: seq), tenant, subscription.id, subscription.licenseId, at, subscription.amountMinor, subscription.currency])
            if payments > 0 { try movement("renewal") }
            payments += 1
        case "subscription.canceled":
            try movement("churned")
        case "subscription.past_due":
            try movement("failed")
        default:
            break
        }
        try db.cachedStatement(sql: """
            INSERT INTO r_subscription (id, tenant_id, license_id, status, auto_renew, period_start, period_end, amount_minor, currency, payments)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET status = excluded.status, auto_renew = excluded.auto_renew, period_start = excluded.period_start,
                period_end = excluded.period_end, amount_minor = excluded.amount_minor, currency = excluded.currency, payments = excluded.payments
            """).execute(arguments: [
                subscription.id, tenant, subscription.licenseId, subscription.status.rawValue, subscription.autoRenew,
                subscription.periodStart, subscription.periodEnd, subscription.amountMinor, subscription.currency, payments,
            ])
    }

    // MARK: validation's event feed

    static func apply(validation events: [ValidationEvent], in db: Database) throws {
        let outcome = try db.cachedStatement(sql: """
            INSERT INTO r_outcome_daily (license_id, day, reason, count) VALUES (?, ?, ?, ?)
            ON CONFLICT(license_id, day, reason) DO UPDATE SET count = count + excluded.count
            """)
        for event in events {
            let day = day(event.occurredAt)
            switch event.event {
            case .outcome(let rollup)?:
                try outcome.execute(arguments: [event.licenseId, day, rollup.reason.rawValue, Int64(clamping: rollup.count)])
            case .machine(let machine)?:
                try db.cachedStatement(sql: "INSERT INTO r_machines (license_id, active) VALUES (?, ?) ON CONFLICT(license_id) DO UPDATE SET active = excluded.active")
                    .execute(arguments: [event.licenseId, machine.machinesActive])
                try peak(event.licenseId, day: day, machines: machine.machinesActive, in: db)
            case .seat(let seat)?:
                try peak(event.licenseId, day: day, seats: seat.seatsHeld, in: db)
            case nil:
                break
            }
        }
    }

    private static func peak(_ license: String, day: Int64, seats: UInt32 = 0, machines: UInt32 = 0, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO r_activity_daily (license_id, day, peak_seats, peak_machines) VALUES (?, ?, ?, ?)
            ON CONFLICT(license_id, day) DO UPDATE SET peak_seats = MAX(peak_seats, excluded.peak_seats),
                peak_machines = MAX(peak_machines, excluded.peak_machines)
            """).execute(arguments: [license, day, seats, machines])
    }

    // MARK: usage's feed

    static func apply(usage events: [UsageFeedEvent], in db: Database) throws {
        for event in events {
            switch event.event {
            case .usage(let daily)?:
                try db.cachedStatement(sql: """
                    INSERT INTO r_usage_daily (license_id, day, feature, quantity, events) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(license_id, day, feature) DO UPDATE SET quantity = excluded.quantity, events = excluded.events
                    """).execute(arguments: [event.licenseId, daily.day, daily.feature, Int64(clamping: daily.quantity), Int64(clamping: daily.events)])
            case .concurrency(let peaks)?:
                try peak(event.licenseId, day: peaks.day, seats: peaks.peakSeats, machines: peaks.peakMachines, in: db)
            case .quota(let state)?:
                if state.exceeded {
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO r_quota_exceeded (license_id, feature, day) VALUES (?, ?, ?)",
                        arguments: [event.licenseId, state.feature, day(event.occurredAt)])
                }
            case .alert(let alert)?:
                try db.execute(
                    sql: """
                        INSERT INTO r_alert (id, tenant_id, license_id, rule, reason, detail, first_at, last_at, count, acknowledged)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(id) DO UPDATE SET detail = excluded.detail, last_at = excluded.last_at, count = excluded.count,
                            acknowledged = excluded.acknowledged
                        """,
                    arguments: [
                        alert.id, event.tenantId, event.licenseId, alert.rule, alert.reason.rawValue, alert.detail, alert.raisedAt,
                        alert.lastSeenAt, Int64(clamping: alert.count), alert.acknowledged,
                    ])
            case nil:
                break
            }
        }
    }
}

/// Writes feed pages into a reporting database: what the followers do with each page
/// (and what `license-bench reports` uses to build a large history fast).
public struct ReadModelWriter: Sendable {
    let database: DatabasePool

    public init(database: DatabasePool) {
        self.database = database
    }

    /// `restart`: issuance was restored to an earlier point; what came from its feed is
    /// rebuilt from the start of the new epoch.
    public func apply(issuance events: [ChangeEvent], cursor: FeedCursor? = nil, restart: Bool = false) async throws {
        try await database.write { db in
            if restart {
                try db.execute(sql: "DELETE FROM r_license; DELETE FROM r_subscription; DELETE FROM r_payment; DELETE FROM r_movement; DELETE FROM r_product")
            }
            try ReadModel.apply(issuance: events, in: db)
            try cursor?.store(feed: ReadModel.issuanceFeed, in: db)
        }
    }

    public func apply(validation events: [ValidationEvent], cursor: FeedCursor? = nil) async throws {
        try await database.write { db in
            try ReadModel.apply(validation: events, in: db)
            try cursor?.store(feed: ReadModel.validationFeed, in: db)
        }
    }

    public func apply(usage events: [UsageFeedEvent], cursor: FeedCursor? = nil) async throws {
        try await database.write { db in
            try ReadModel.apply(usage: events, in: db)
            try cursor?.store(feed: ReadModel.usageFeed, in: db)
        }
    }
}
