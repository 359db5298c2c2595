import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging

/// The thresholds of the compliance rules, from the settings (README, "Compliance").
public struct ComplianceRules: Sendable, Equatable {
    /// Seat checkouts refused or queued, per license and hour, above which seats are over-used.
    public var seatLimitHitsPerHour = 5
    /// Activations and deactivations per license and UTC day above which machines churn.
    public var machineChangesPerDay = 10
    /// Distinct machines a license may be validated from in a UTC day beyond its machine
    /// allowance before it looks shared.
    public var extraFingerprintsPerDay = 0
    /// Distinct countries a license may be validated from in a UTC day.
    public var countriesPerDay = 3
    /// Validations from denied regions per license and day that raise an alert.
    public var deniedRegionAttemptsPerDay = 1
    /// Validations of a revoked, suspended or expired license per day that raise an alert.
    public var useAfterEndPerDay = 1

    public init() {}

    public init(settings: Settings) throws {
        self.init()
        seatLimitHitsPerHour = try settings.int("alert-seat-limit-hits-per-hour", default: seatLimitHitsPerHour, in: 1...1_000_000)
        machineChangesPerDay = try settings.int("alert-machine-changes-per-day", default: machineChangesPerDay, in: 1...1_000_000)
        extraFingerprintsPerDay = try settings.int("alert-extra-machines-per-day", default: extraFingerprintsPerDay, in: 0...1_000_000)
        countriesPerDay = try settings.int("alert-countries-per-day", default: countriesPerDay, in: 1...250)
        deniedRegionAttemptsPerDay = try settings.int("alert-denied-region-attempts-per-day", default: deniedRegionAttemptsPerDay, in: 1...1_000_000)
        useAfterEndPerDay = try settings.int("alert-use-after-end-per-day", default: useAfterEndPerDay, in: 1...1_000_000)
    }
}

/// Watches validation's event feed: keeps the concurrency peaks and raises the alerts the
/// rules call for. Each page is applied in one transaction with the feed cursor, so a
/// restart neither misses nor double-counts an event.
struct ComplianceMonitor: Sendable {
    static let feed = "validation"
    let rules: ComplianceRules
    let clock: any LicenseClock

    func apply(_ events: [ValidationEvent], cursor: FeedCursor, in db: Database) throws {
        let now = clock.now
        for event in events {
            let (tenant, license, at) = (event.tenantId, event.licenseId, event.occurredAt)
            let day = at.floorDiv(86400) * 86400
            switch event.event {
            case .machine(let machine)?:
                try peak(tenant, license, day: day, machines: machine.machinesActive)
                let changes = try add(tenant, license, .machineChurn, day, 1, in: db)
                if changes > rules.machineChangesPerDay {
                    try Alerts.raise(
                        tenant: tenant, license: license, rule: .machineChurn, count: 1,
                        detail: "\(changes) machine activations and deactivations on \(ISODate.day(day)), more than the \(rules.machineChangesPerDay) allowed a day",
                        now: now, in: db)
                }
            case .seat(let seat)?:
                try peak(tenant, license, day: day, seats: seat.seatsHeld)
                guard seat.action == .queued || seat.action == .refused else { break }
                let hour = at.floorDiv(3600) * 3600
                let hits = try add(tenant, license, .seatOveruse, hour, 1, in: db)
                if hits > rules.seatLimitHitsPerHour {
                    try Alerts.raise(
                        tenant: tenant, license: license, rule: .seatOveruse, count: 1,
                        detail: "all \(seat.seatLimit) seats were taken for \(hits) checkouts in the hour from \(ISODate.format(hour)), more than the \(rules.seatLimitHitsPerHour) allowed",
                        now: now, in: db)
                }
            case .outcome(let rollup)?:
                try outcome(rollup, tenant: tenant, license: license, day: day, now: now, in: db)
            case nil:
                break
            }
        }
        try cursor.store(feed: Self.feed, in: db)

        func peak(_ tenant: String, _ license: String, day: Int64, seats: UInt32 = 0, machines: UInt32 = 0) throws {
            try db.execute(
                sql: """
                    INSERT INTO concurrency_daily (tenant_id, license_id, day, peak_seats, peak_machines) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(tenant_id, license_id, day) DO UPDATE SET
                        dirty = CASE WHEN excluded.peak_seats > peak_seats OR excluded.peak_machines > peak_machines THEN 1 ELSE dirty END,
                        peak_seats = MAX(peak_seats, excluded.peak_seats), peak_machines = MAX(peak_machines, excluded.peak_machines)
                    """,
                arguments: [tenant, license, day, seats, machines])
        }
    }

    /// Validations of one license, outcome and minute against the sharing, region and
    /// end-of-rights rules.
    private func outcome(_ rollup: OutcomeRollup, tenant: String, license: String, day: Int64, now: Int64, in db: Database) throws {
        let when = ISODate.day(day)
        switch rollup.reason {
        case .revoked, .suspended, .expired:
            let attempts = try add(tenant, license, .useAfterEnd, day, Int(clamping: rollup.count), in: db)
            if attempts >= rules.useAfterEndPerDay {
                try Alerts.raise(
                    tenant: tenant, license: license, rule: .useAfterEnd, reason: rollup.reason, count: rollup.count,
                    detail: "\(attempts) validations on \(when) of a license that is \(rollup.reason.description.lowercased().replacingOccurrences(of: "_", with: " "))",
                    now: now, in: db)
            }
        case .regionNotAllowed:
            let attempts = try add(tenant, license, .deniedRegion, day, Int(clamping: rollup.count), in: db)
            if attempts >= rules.deniedRegionAttemptsPerDay {
                try Alerts.raise(
                    tenant: tenant, license: license, rule: .deniedRegion, count: rollup.count,
                    detail: "\(attempts) validations on \(when) from regions the license does not allow (\(rollup.countries.joined(separator: ", ")))",
                    now: now, in: db)
            }
        default:
            break
        }
        // Sharing: distinct machines and countries over the UTC day, whatever the outcome.
        let fingerprints = try distinct(license, day, "fingerprint", rollup.fingerprintHashes, atLeast: Int(rollup.distinctFingerprints), in: db)
        if rollup.machineAllowance > 0, fingerprints > Int(rollup.machineAllowance) + rules.extraFingerprintsPerDay {
            try Alerts.raise(
                tenant: tenant, license: license, rule: .fingerprintSharing, count: 1,
                detail: "validated from \(fingerprints) distinct machines on \(when); the license allows \(rollup.machineAllowance)",
                now: now, in: db)
        }
        let countries = try distinct(license, day, "country", rollup.countries, atLeast: Int(rollup.distinctCountries), in: db)
        if countries > rules.countriesPerDay {
            let seen = try String.fetchAll(
                db, sql: "SELECT value FROM distinct_seen WHERE license_id = ? AND day = ? AND kind = 'country' ORDER BY value LIMIT 20",
                arguments: [license, day])
            try Alerts.raise(
                tenant: tenant, license: license, rule: .countrySharing, count: 1,
                detail: "validated from \(countries) countries on \(when) (\(seen.joined(separator: ", "))), more than the \(rules.countriesPerDay) allowed a day",
                now: now, in: db)
        }
    }

    /// Adds to a rule's count for a license in a window (an hour or a day); returns the total.
    private func add(_ tenant: String, _ license: String, _ rule: AlertRule, _ window: Int64, _ value: Int, in db: Database) throws -> Int {
        try Int.fetchOne(
            db,
            sql: """
                INSERT INTO rule_window (tenant_id, license_id, rule, window_start, value) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(tenant_id, license_id, rule, window_start) DO UPDATE SET value = value + excluded.value
                RETURNING value
                """,
            arguments: [tenant, license, rule.rawValue, window, value]) ?? value
    }

    /// Remembers the values seen on the day; returns how many distinct ones it has seen
    /// (at least `atLeast`, the rollup's exact count when it listed only some).
    private func distinct(_ license: String, _ day: Int64, _ kind: String, _ values: [String], atLeast: Int, in db: Database) throws -> Int {
        guard !values.isEmpty else { return atLeast }
        let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO distinct_seen (license_id, day, kind, value) VALUES (?, ?, ?, ?)")
        for value in values { try insert.execute(arguments: [license, day, kind, value]) }
        let seen = try Int.fetchOne(
            db, sql: "SELECT COUNT(*) FROM distinct_seen WHERE license_id = ? AND day = ? AND kind = ?", arguments: [license, day, kind]) ?? 0
        return max(seen, atLeast)
    }
}
