import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

// Validation's event feed (../DESIGN.md): what happens on the hot path, for usage's
// compliance rules and for reporting. Machines and seats are row-level changes written in
// the transaction that makes them; validations are rolled up per license, outcome and
// minute from the validation log, never one event per validation.

enum ValidationEvents {
    static let journal = FeedJournal(table: "validation_event")

    static func record(_ event: ValidationEvent.Event, facts: LicenseFacts, at now: Int64, in db: Database) throws {
        let kind: String
        switch event {
        case .machine: kind = "machine"
        case .seat: kind = "seat"
        case .outcome: kind = "outcome"
        }
        let payload = ValidationEvent(occurredAt: now, tenantId: facts.tenantID, licenseId: facts.licenseID, event: event)
        try journal.append(kind: kind, occurredAt: now, tenant: facts.tenantID, license: facts.licenseID, payload: payload.serializedBytes(), in: db)
    }

    /// A machine bound or unbound, with the count the license has now.
    static func machine(
        _ facts: LicenseFacts, id: String, fingerprintHash: String, activated: Bool, offline: Bool, now: Int64, in db: Database
    ) throws {
        let active = try Int.fetchOne(
            db, sql: "SELECT COUNT(*) FROM machine WHERE license_id = ? AND (offline_until = 0 OR offline_until > ?)",
            arguments: [facts.licenseID, now]) ?? 0
        try record(
            .machine(MachineEvent(
                machineId: id, fingerprintHash: fingerprintHash, activated: activated, machinesActive: UInt32(clamping: active),
                maxMachines: UInt32(clamping: facts.allowance(facts.maxMachines) ?? 0), offline: offline)),
            facts: facts, at: now, in: db)
    }

    /// A seat change, with the seats the license holds now.
    static func seat(_ facts: LicenseFacts, _ action: SeatAction, leaseId: String = "", leases: Int = 1, now: Int64, in db: Database) throws {
        let held = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_lease WHERE license_id = ?", arguments: [facts.licenseID]) ?? 0
        try record(
            .seat(SeatEvent(
                action: action, leaseId: leaseId, seatsHeld: UInt32(clamping: held),
                seatLimit: UInt32(clamping: facts.allowance(facts.maxSeats) ?? 0), leases: UInt32(clamping: leases))),
            facts: facts, at: now, in: db)
    }
}

/// Rolls the validation log up into the feed, one minute at a time: per license and
/// outcome, how many validations, from how many distinct machines and countries. A minute
/// is closed `lateness` seconds after it ends (the log is written in batches every few
/// milliseconds), in one transaction with the cursor, so each minute is published once.
final class OutcomeRollups: Service, Sendable {
    private let database: DatabasePool
    private let clock: @Sendable () -> Int64
    private let interval: Duration
    private let logger: Logger
    static let lateness: Int64 = 10
    /// Fingerprint hashes listed per rollup; the distinct count stays exact beyond it.
    static let listedFingerprints = 64

    init(database: DatabasePool, clock: @escaping @Sendable () -> Int64, interval: Duration = .seconds(5), logger: Logger) {
        self.database = database
        self.clock = clock
        self.interval = interval
        self.logger = logger
    }

    func run() async throws {
        await Periodically.run(every: interval, first: false, last: true) {
            do {
                try await closeMinutes()
            } catch {
                logger.notice("outcome rollup failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Publishes every minute that has closed; returns how many rollups were written.
    @discardableResult
    func closeMinutes() async throws -> Int {
        let now = clock()
        var written = 0
        while !Task.isCancelled {
            let (count, more) = try await database.write { db -> (Int, Bool) in
                let start: Int64
                if let closed = try Int64.fetchOne(db, sql: "SELECT closed_minute FROM rollup_cursor WHERE id = 1") {
                    start = closed
                } else {
                    // First run: from the oldest logged validation of the last day.
                    let oldest = try Int64.fetchOne(db, sql: "SELECT MIN(occurred_at) FROM validation_log WHERE occurred_at >= ?", arguments: [now - 86400])
                    start = (oldest ?? now) / 60 * 60
                }
                var minute = start
                var rollups = 0
                // At most an hour of minutes per transaction keeps each write short.
                while minute + 60 + Self.lateness <= now, minute < start + 3600 {
                    rollups += try Self.rollUp(minute: minute, in: db)
                    minute += 60
                }
                try db.execute(
                    sql: "INSERT INTO rollup_cursor (id, closed_minute) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET closed_minute = excluded.closed_minute",
                    arguments: [minute])
                return (rollups, minute + 60 + Self.lateness <= now)
            }
            written += count
            if !more { break }
        }
        return written
    }

    private static func rollUp(minute: Int64, in db: Database) throws -> Int {
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT license_id, reason, COUNT(*), COUNT(DISTINCT NULLIF(fingerprint_hash, '')), group_concat(DISTINCT NULLIF(region, '')),
                    group_concat(DISTINCT NULLIF(fingerprint_hash, ''))
                FROM validation_log WHERE occurred_at >= ? AND occurred_at < ? AND license_id != ''
                GROUP BY license_id, reason ORDER BY license_id, reason
                """,
            arguments: [minute, minute + 60])
        var written = 0
        for row in rows {
            guard let facts = try LicenseReplica.facts(licenseID: row[0], in: db) else { continue }
            let countries = ((row[4] as String?) ?? "").split(separator: ",").map(String.init).sorted()
            let fingerprints = ((row[5] as String?) ?? "").split(separator: ",").prefix(listedFingerprints).map(String.init)
            let rollup = OutcomeRollup(
                minute: minute, reason: ReasonCode(rawValue: row[1]), count: UInt64(row[2] as Int64),
                distinctFingerprints: UInt32(clamping: row[3] as Int64), distinctCountries: UInt32(clamping: countries.count),
                countries: countries, fingerprintHashes: fingerprints,
                machineAllowance: UInt32(clamping: facts.allowance(facts.maxMachines) ?? 0))
            try ValidationEvents.record(.outcome(rollup), facts: facts, at: minute + 59, in: db)
            written += 1
        }
        return written
    }
}

extension ValidationService {
    /// Validation's event feed, for the services behind the gateway.
    public func events(_ request: FeedRequest, _ call: ServerCall) async throws -> ValidationEventsResponse {
        let page = try await database.read { db in
            try ValidationEvents.journal.read(after: request.afterSeq, limit: request.limit, kinds: request.kinds, in: db)
        }
        var events: [ValidationEvent] = []
        events.reserveCapacity(page.events.count)
        for (seq, payload) in page.events {
            var event = try ValidationEvent(serializedBytes: payload)
            event.seq = seq
            events.append(event)
        }
        return ValidationEventsResponse(events: events, lastSeq: page.lastSeq, epoch: page.epoch, nextAfterSeq: page.nextAfter)
    }
}
