import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

// Read replicas (docs/scaling.md). A replica answers Validate from its own copy of the
// license facts (issuance's feed, followed as the primary follows it) and of the machines
// (the primary's machine events); every other method is the primary's and is forwarded to
// it. The validations a replica answers are shipped to the primary's log, so compliance and
// reports see every one. A replica's database is disposable: a new one rebuilds from the feeds.

/// What this validation service is.
public enum ValidationRole: Sendable {
    /// Owns activations, machines, seats and the validation log.
    case primary
    /// Answers validations from its copy; the client reaches its primary.
    case replica(primary: RPCClient)

    static func from(_ environment: ServiceEnvironment) throws -> ValidationRole {
        let settings = environment.settings
        switch settings["role"] ?? "primary" {
        case "primary":
            return .primary
        case "replica":
            guard settings["primary"] != nil else {
                throw RPCError.invalidArgument("--role replica needs --primary ADDRESS: the validation primary whose machines it copies and to which it forwards writes")
            }
            return .replica(primary: try environment.peerClient("primary", connections: 2))
        case let other:
            throw RPCError.invalidArgument("role must be primary or replica, not \(other)")
        }
    }
}

/// The primary's machines in a replica: loaded from a snapshot (`ReplicaMachines`), then
/// kept by the primary's machine events. A new epoch (the primary restored) loads it again.
enum MachineMirror {
    static let feed = "primary-machines"
    static let snapshotPage: UInt32 = 5000

    static func follower(primary: RPCClient, database: DatabasePool, idleInterval: Duration, logger: Logger) -> FeedFollower<ValidationEvent> {
        FeedFollower(feed: feed, database: database, idleInterval: idleInterval, logger: logger) { after in
            if after == 0 { return try await snapshot(primary) }
            // Short: a denial waits for this pull (read-your-writes), and a primary that is
            // down must not hold the denial long.
            let response = try await primary.call(
                ValidationMethods.events, FeedRequest(afterSeq: after, limit: 2000, kinds: ["machine"]), timeout: .seconds(2))
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
        } apply: { events, cursor, restart in
            try await database.write { db in
                if restart { try db.execute(sql: "DELETE FROM machine") }
                let applied = restart ? 0 : try FeedCursor.load(feed: feed, in: db).appliedSeq
                // Snapshot rows carry no sequence; events at or below the cursor were applied.
                for event in events where event.seq == 0 || event.seq > applied { try apply(event, in: db) }
                try cursor.store(feed: feed, in: db)
            }
        }
    }

    /// Every machine of the primary, as activation events, positioned at the event feed's
    /// head when the first page was read: an event after it replays a change a later page
    /// may already show, and replaying is harmless (see `apply`).
    private static func snapshot(_ primary: RPCClient) async throws -> FeedPage<ValidationEvent> {
        var events: [ValidationEvent] = []
        var head: (seq: UInt64, epoch: String)?
        var after = ""
        repeat {
            let page = try await primary.call(
                ValidationMethods.replicaMachines, ReplicaMachinesRequest(afterId: after, limit: snapshotPage), timeout: .seconds(10))
            if let head, head.epoch != page.epoch {
                throw RPCError(.unavailable, "the primary started a new epoch while its machines were being copied; copying again")
            }
            head = head ?? (page.eventsSeq, page.epoch)
            for machine in page.machines {
                events.append(ValidationEvent(
                    licenseId: machine.licenseId,
                    event: .machine(MachineEvent(machineId: machine.id, fingerprintHash: machine.fingerprintHash, activated: true))))
            }
            after = page.nextAfterId
        } while !after.isEmpty
        let (seq, epoch) = head ?? (0, "")
        return FeedPage(events: events, lastSeq: seq, nextAfter: seq, epoch: epoch)
    }

    /// A machine bound replaces whatever held its id or its fingerprint on that license; a
    /// machine unbound is removed. Both are idempotent.
    private static func apply(_ event: ValidationEvent, in db: Database) throws {
        guard case .machine(let machine)? = event.event, !machine.machineId.isEmpty else { return }
        if machine.activated {
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO machine (id, license_id, fingerprint_hash, first_seen, last_seen)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [machine.machineId, event.licenseId, machine.fingerprintHash, event.occurredAt, event.occurredAt])
        } else {
            try db.execute(sql: "DELETE FROM machine WHERE id = ?", arguments: [machine.machineId])
        }
    }
}

/// Ships a replica's validation log to its primary, oldest first, a batch at a time, and
/// deletes what the primary has stored. Rows are numbered by the replica and the primary
/// keeps the highest it stored per replica, so a batch sent twice (an answer lost) is stored
/// once. The highest shipped row stays behind, so SQLite never numbers a row again.
final class LogShipper: Service, Sendable {
    static let batch = 5000
    private let database: DatabasePool
    private let primary: RPCClient
    private let interval: Duration
    private let logger: Logger

    init(database: DatabasePool, primary: RPCClient, interval: Duration = .milliseconds(500), logger: Logger) {
        self.database = database
        self.primary = primary
        self.interval = interval
        self.logger = logger
    }

    func run() async throws {
        var failing = false
        await Periodically.run(every: interval, first: false, last: true) {
            do {
                while try await shipOnce(), !Task.isCancelled {}
                if failing { logger.info("validation log reaches the primary again") }
                failing = false
            } catch {
                if !failing {
                    logger.warning("cannot ship the validation log to the primary; keeping it and retrying", metadata: ["error": "\(error)"])
                }
                failing = true
            }
        }
    }

    /// Ships one batch; true when it was full (more may be waiting).
    @discardableResult
    func shipOnce() async throws -> Bool {
        let (replicaID, shipped, rows) = try await database.write { db -> (String, Int64, [LoggedValidation]) in
            let identity = try Self.identity(in: db)
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT id, occurred_at, license_id, reason, fingerprint_hash, region, feature FROM validation_log
                    WHERE id > ? ORDER BY id LIMIT ?
                    """,
                arguments: [identity.shipped, Self.batch]
            ).map {
                LoggedValidation(
                    row: UInt64($0[0] as Int64), occurredAt: $0[1], licenseId: $0[2], reason: ReasonCode(rawValue: $0[3]), fingerprintHash: $0[4],
                    region: $0[5], feature: $0[6])
            }
            return (identity.id, identity.shipped, rows)
        }
        guard !rows.isEmpty else { return false }
        let answer = try await primary.call(
            ValidationMethods.appendReplicaLog, AppendReplicaLogRequest(replicaId: replicaID, entries: rows), timeout: .seconds(10))
        let stored = Int64(clamping: answer.storedThrough)
        guard stored >= shipped else {
            throw RPCError(.dataLoss, "the primary holds this replica's log only through row \(stored), below the \(shipped) it acknowledged before (was it restored from a backup?)")
        }
        try await database.write { db in
            try db.execute(sql: "UPDATE replica_identity SET shipped_through = ? WHERE id = 1", arguments: [stored])
            try db.execute(sql: "DELETE FROM validation_log WHERE id < ?", arguments: [stored])
        }
        return rows.count == Self.batch
    }

    /// The name this replica ships under, made with its database, and how far it shipped.
    private static func identity(in db: Database) throws -> (id: String, shipped: Int64) {
        if let row = try Row.fetchOne(db, sql: "SELECT replica_id, shipped_through FROM replica_identity WHERE id = 1") {
            return (row[0], row[1])
        }
        let id = UUID().uuidString.lowercased()
        try db.execute(sql: "INSERT INTO replica_identity (id, replica_id, shipped_through) VALUES (1, ?, 0)", arguments: [id])
        return (id, 0)
    }
}

extension ValidationService {
    /// For replicas: a page of machines with the event feed's head, from one snapshot.
    public func replicaMachines(_ request: ReplicaMachinesRequest, _ call: ServerCall) async throws -> ReplicaMachinesResponse {
        try requirePrimary("ReplicaMachines")
        let limit = request.limit == 0 ? 1000 : Int(min(request.limit, 5000))
        try Check.length(request.afterId, "after_id", max: 64)
        return try await database.read { db in
            let head = try ValidationEvents.journal.head(in: db)
            let machines = try Row.fetchAll(
                db, sql: "SELECT id, license_id, fingerprint_hash FROM machine WHERE id > ? ORDER BY id LIMIT ?", arguments: [request.afterId, limit]
            ).map { ReplicaMachine(id: $0[0], licenseId: $0[1], fingerprintHash: $0[2]) }
            return ReplicaMachinesResponse(
                machines: machines, eventsSeq: head.lastSeq, epoch: head.epoch, nextAfterId: machines.count == limit ? machines.last?.id ?? "" : "")
        }
    }

    /// For replicas: stores the validations a replica answered in this log, each row once.
    public func appendReplicaLog(_ request: AppendReplicaLogRequest, _ call: ServerCall) async throws -> AppendReplicaLogResponse {
        try requirePrimary("AppendReplicaLog")
        try Check.nonEmpty(request.replicaId, "replica_id")
        try Check.length(request.replicaId, "replica_id", max: 64)
        guard request.entries.count <= LogShipper.batch else {
            throw RPCError.invalidArgument("at most \(LogShipper.batch) entries per call, got \(request.entries.count)")
        }
        var previous: UInt64 = 0
        for (index, entry) in request.entries.enumerated() {
            guard entry.row > previous else { throw RPCError.invalidArgument("entries[\(index)].row must be above the row before it") }
            previous = entry.row
            try Check.length(entry.licenseId, "entries[\(index)].license_id", max: 64)
            try Check.length(entry.fingerprintHash, "entries[\(index)].fingerprint_hash", max: 64)
            try Check.length(entry.region, "entries[\(index)].region", max: 8)
            try Check.length(entry.feature, "entries[\(index)].feature", max: 128)
        }
        let now = clock.now
        let stored = try await database.write { db -> UInt64 in
            let through = UInt64(
                try Int64.fetchOne(db, sql: "SELECT stored_through FROM replica_log_source WHERE replica_id = ?", arguments: [request.replicaId]) ?? 0)
            let fresh = request.entries.filter { $0.row > through }
            let last = fresh.last?.row ?? through
            try ValidationLog.insert(
                fresh.map {
                    ValidationLog.Entry(
                        occurredAt: $0.occurredAt, licenseID: $0.licenseId, reason: $0.reason, fingerprintHash: $0.fingerprintHash, region: $0.region,
                        feature: $0.feature)
                }[...], in: db)
            try db.execute(
                sql: """
                    INSERT INTO replica_log_source (replica_id, stored_through, updated_at) VALUES (?, ?, ?)
                    ON CONFLICT(replica_id) DO UPDATE SET stored_through = excluded.stored_through, updated_at = excluded.updated_at
                    """,
                arguments: [request.replicaId, Int64(clamping: last), now])
            return last
        }
        return AppendReplicaLogResponse(storedThrough: stored)
    }

    private func requirePrimary(_ method: String) throws {
        if case .replica = role {
            throw RPCError(.failedPrecondition, "\(method) is answered by the validation primary; this is a replica: point the caller at the primary")
        }
    }
}
