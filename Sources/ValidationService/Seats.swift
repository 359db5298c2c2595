import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Floating seats. A checkout takes a lease for a TTL; heartbeats extend it; a checkin or the
// TTL running out frees it, so a crashed client's seat comes back by itself. Every seat
// decision runs inside a write transaction — SQLite's single writer — so concurrent
// checkouts can never hold more leases than the limit plus overage. When all seats are
// taken a client may queue: seats that free up go to the queue in arrival order.

extension ValidationService {
    public func checkoutSeat(_ request: CheckoutSeatRequest, _ call: ServerCall) async throws -> SeatLeaseResponse {
        try Check.nonEmpty(request.clientId, "client_id")
        try Check.length(request.clientId, "client_id")
        try Check.length(request.user, "user")
        guard request.ttlSeconds >= 0, request.ttlSeconds <= Self.maxSeatTTL else {
            throw RPCError.invalidArgument("ttl_seconds must be between 0 (the default, \(seatTTL) s) and \(Self.maxSeatTTL)")
        }
        let now = clock.now
        guard let (_, facts) = try await lookUp(request.licenseKey, call) else {
            return SeatLeaseResponse(reason: .notFound)
        }
        var usable = facts
        usable.licenseType = .unspecified
        let decision = LicenseDecider.decide(usable, ValidationQuery(), now: now)
        guard decision.allows else { return SeatLeaseResponse(reason: decision.reason) }
        let ttl = request.ttlSeconds == 0 ? seatTTL : request.ttlSeconds
        let limit = facts.allowance(facts.maxSeats)
        return try await writes.write { db in
            try Self.reclaim(facts, now: now, in: db)
            if let existing = try SeatLease.fetch(db, license: facts.licenseID, client: request.clientId) {
                // The client already holds a seat: the checkout is a renewal.
                var lease = existing
                lease.renew(now: now, ttl: ttl)
                try db.execute(
                    sql: "UPDATE seat_lease SET acquired_at = ?, expires_at = ?, ttl_seconds = ? WHERE lease_id = ?",
                    arguments: [lease.acquiredAt, lease.expiresAt, ttl, lease.leaseId])
                return try Self.response(.valid, lease: lease, limit: limit, license: facts.licenseID, in: db)
            }
            let inUse = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_lease WHERE license_id = ?", arguments: [facts.licenseID]) ?? 0
            var free = limit.map { $0 - inUse } ?? Int.max
            var full = limit.map { "the license's \(inUse) of \($0) seats (overage included) are in use" } ?? ""
            if let department = try LicenseReplica.department(facts.departmentID, in: db), department.maxSeats > 0 {
                let departmentInUse = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_lease WHERE department_id = ?", arguments: [facts.departmentID]) ?? 0
                let departmentLimit = Int(department.maxSeats) * Int(min(max(facts.overagePermille, 1000), 1_000_000)) / 1000
                if departmentLimit - departmentInUse < free {
                    free = departmentLimit - departmentInUse
                    full = "department \(facts.departmentID) uses \(departmentInUse) of its \(departmentLimit) seats"
                }
            }
            // Clients already waiting come first.
            let ahead = try Self.queuePosition(license: facts.licenseID, client: request.clientId, in: db)
            if free > 0, ahead < free {
                try db.execute(sql: "DELETE FROM seat_queue WHERE license_id = ? AND client_id = ?", arguments: [facts.licenseID, request.clientId])
                let lease = SeatLease(
                    leaseId: EntityID.make("lease"), licenseId: facts.licenseID, clientId: request.clientId, user: request.user,
                    acquiredAt: now, expiresAt: now + ttl)
                try db.execute(
                    sql: """
                        INSERT INTO seat_lease (lease_id, license_id, department_id, client_id, user, acquired_at, expires_at, ttl_seconds)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [lease.leaseId, lease.licenseId, facts.departmentID, lease.clientId, lease.user, lease.acquiredAt, lease.expiresAt, ttl])
                try ValidationEvents.seat(facts, .checkout, leaseId: lease.leaseId, now: now, in: db)
                return try Self.response(.valid, lease: lease, limit: limit, license: facts.licenseID, in: db)
            }
            guard request.queue else {
                try ValidationEvents.seat(facts, .refused, leases: 0, now: now, in: db)
                var response = try Self.response(.seatLimit, lease: nil, limit: limit, license: facts.licenseID, in: db)
                response.detail = full.isEmpty ? "clients queued ahead take the free seats" : "\(full); check one in, or ask to queue"
                return response
            }
            // Join (or stay in) the line; a client that stops asking leaves it after the TTL.
            try db.execute(
                sql: """
                    INSERT INTO seat_queue (license_id, client_id, user, expires_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT(license_id, client_id) DO UPDATE SET expires_at = excluded.expires_at
                    """,
                arguments: [facts.licenseID, request.clientId, request.user, now + ttl])
            try ValidationEvents.seat(facts, .queued, leases: 0, now: now, in: db)
            var response = try Self.response(.seatLimit, lease: nil, limit: limit, license: facts.licenseID, in: db)
            response.detail = full
            response.queuePosition = UInt32(try Self.queuePosition(license: facts.licenseID, client: request.clientId, in: db) + 1)
            return response
        }
    }

    /// Extends a lease, after checking the license as a validation would: a lease of a
    /// license revoked, suspended or expired past its grace ends now, with the reason, and
    /// the clients queued for its seats are dropped.
    public func heartbeatSeat(_ request: SeatLeaseRequest, _ call: ServerCall) async throws -> SeatLeaseResponse {
        try Check.nonEmpty(request.leaseId, "lease_id")
        let now = clock.now
        let tenant = call.metadata[RPCMetadata.tenant]
        return try await writes.write { db in
            // A lease past its end that no checkout has reclaimed yet is still the client's: a
            // wall clock stepped forward does not take a seat nobody else asked for.
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM seat_lease WHERE lease_id = ?", arguments: [request.leaseId]),
                let facts = try LicenseReplica.facts(licenseID: row["license_id"], in: db), tenant == nil || facts.tenantID == tenant
            else {
                throw RPCError.notFound("lease \(request.leaseId) has ended (checked in or expired); check out again")
            }
            var usable = facts
            usable.licenseType = .unspecified
            let decision = LicenseDecider.decide(usable, ValidationQuery(), now: now)
            guard decision.allows else {
                try db.execute(sql: "DELETE FROM seat_lease WHERE license_id = ?", arguments: [facts.licenseID])
                let ended = db.changesCount
                try db.execute(sql: "DELETE FROM seat_queue WHERE license_id = ?", arguments: [facts.licenseID])
                try ValidationEvents.seat(facts, .checkin, leaseId: request.leaseId, leases: ended, now: now, in: db)
                return SeatLeaseResponse(reason: decision.reason, lease: SeatLease(row: row))
            }
            var lease = SeatLease(row: row)
            lease.renew(now: now, ttl: row["ttl_seconds"])
            try db.execute(
                sql: "UPDATE seat_lease SET acquired_at = ?, expires_at = ? WHERE lease_id = ?", arguments: [lease.acquiredAt, lease.expiresAt, lease.leaseId])
            return try Self.response(.valid, lease: lease, limit: facts.allowance(facts.maxSeats), license: facts.licenseID, in: db)
        }
    }

    /// Frees a seat. Safe to repeat: a lease already checked in (or ended) is not held, so a
    /// retry after a lost answer succeeds too.
    public func checkinSeat(_ request: SeatLeaseRequest, _ call: ServerCall) async throws -> SeatLeaseResponse {
        try Check.nonEmpty(request.leaseId, "lease_id")
        let tenant = call.metadata[RPCMetadata.tenant]
        let now = clock.now
        return try await writes.write { db in
            guard let license = try String.fetchOne(db, sql: "SELECT license_id FROM seat_lease WHERE lease_id = ?", arguments: [request.leaseId]),
                let facts = try LicenseReplica.facts(licenseID: license, in: db), tenant == nil || facts.tenantID == tenant
            else {
                return SeatLeaseResponse(reason: .valid)
            }
            try db.execute(sql: "DELETE FROM seat_lease WHERE lease_id = ?", arguments: [request.leaseId])
            try ValidationEvents.seat(facts, .checkin, leaseId: request.leaseId, now: now, in: db)
            return SeatLeaseResponse(reason: .valid)
        }
    }

    /// Who holds a license's seats now (concurrent-user monitoring).
    public func listSeats(_ request: ListSeatsRequest, _ call: ServerCall) async throws -> ListSeatsResponse {
        try Check.nonEmpty(request.licenseId, "license_id")
        let now = clock.now
        let tenant = call.metadata[RPCMetadata.tenant]
        let found = try await database.read { db -> ListSeatsResponse? in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT max_seats, overage_permille FROM replica_license WHERE license_id = ? AND (? IS NULL OR tenant_id = ?)",
                arguments: [request.licenseId, tenant, tenant])
            else { return nil }
            let leases = try Row.fetchAll(
                db, sql: "SELECT * FROM seat_lease WHERE license_id = ? AND expires_at > ? ORDER BY acquired_at", arguments: [request.licenseId, now]
            ).map(SeatLease.init(row:))
            let maxSeats: UInt32 = row[0]
            let overage: UInt32 = row[1]
            return ListSeatsResponse(leases: leases, seatLimit: UInt32(clamping: Int(maxSeats) * Int(min(max(overage, 1000), 1_000_000)) / 1000))
        }
        guard let found else { throw RPCError.notFound("no license \(request.licenseId)") }
        return found
    }

    /// The longest time to live a client may ask for (a day).
    static let maxSeatTTL: Int64 = 86400

    static func reclaim(_ facts: LicenseFacts, now: Int64, in db: Database) throws {
        // A lease ending more than its time to live from now was renewed before the wall clock
        // was set back: it ends one time to live from now, not hours later, so the seat of a
        // client that stopped heartbeating comes back within one TTL whatever the clock did.
        try db.execute(
            sql: """
                UPDATE seat_lease SET acquired_at = MIN(acquired_at, ?), expires_at = ? + ttl_seconds
                WHERE license_id = ? AND expires_at > ? + ttl_seconds
                """,
            arguments: [now, now, facts.licenseID, now])
        try db.execute(
            sql: "UPDATE seat_queue SET expires_at = ? WHERE license_id = ? AND expires_at > ?",
            arguments: [now + Self.maxSeatTTL, facts.licenseID, now + Self.maxSeatTTL])
        try db.execute(sql: "DELETE FROM seat_lease WHERE license_id = ? AND expires_at <= ?", arguments: [facts.licenseID, now])
        let expired = db.changesCount
        if expired > 0 { try ValidationEvents.seat(facts, .expired, leases: expired, now: now, in: db) }
        try db.execute(sql: "DELETE FROM seat_queue WHERE license_id = ? AND expires_at <= ?", arguments: [facts.licenseID, now])
    }

    /// How many clients wait ahead of this one (all of them if it is not queued).
    static func queuePosition(license: String, client: String, in db: Database) throws -> Int {
        if let seq = try Int64.fetchOne(db, sql: "SELECT seq FROM seat_queue WHERE license_id = ? AND client_id = ?", arguments: [license, client]) {
            return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_queue WHERE license_id = ? AND seq < ?", arguments: [license, seq]) ?? 0
        }
        return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_queue WHERE license_id = ?", arguments: [license]) ?? 0
    }

    static func response(_ reason: ReasonCode, lease: SeatLease?, limit: Int?, license: String, in db: Database) throws -> SeatLeaseResponse {
        let inUse = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM seat_lease WHERE license_id = ?", arguments: [license]) ?? 0
        return SeatLeaseResponse(reason: reason, lease: lease, seatsInUse: UInt32(clamping: inUse), seatLimit: UInt32(clamping: limit ?? 0))
    }
}

extension SeatLease {
    /// Extended to one time to live from now. A lease is never held from a time after now:
    /// a clock set back since it was taken moves its start back too, so no duration a
    /// report derives from it is negative (and the table's end-after-start check holds).
    mutating func renew(now: Int64, ttl: Int64) {
        acquiredAt = min(acquiredAt, now)
        expiresAt = now + ttl
    }

    init(row: Row) {
        self.init(
            leaseId: row["lease_id"], licenseId: row["license_id"], clientId: row["client_id"], user: row["user"],
            acquiredAt: row["acquired_at"], expiresAt: row["expires_at"])
    }

    static func fetch(_ db: Database, license: String, client: String) throws -> SeatLease? {
        try Row.fetchOne(db, sql: "SELECT * FROM seat_lease WHERE license_id = ? AND client_id = ?", arguments: [license, client]).map(SeatLease.init(row:))
    }
}
