import Synchronization
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging

/// Validation's copy of what it needs from issuance — license facts, departments, sealed
/// signing keys — applied from issuance's change feed.
struct LicenseReplica: Sendable {
    static let feed = "issuance"
    let database: DatabasePool
    /// Read-only connections for the synchronous look-ups of the hot path (see
    /// `ServiceDatabase.openLookups`).
    let lookups: LookupConnections

    init(database: DatabasePool) throws {
        self.database = database
        self.lookups = try ServiceDatabase.openLookups(for: database, reading: ["replica_license", "machine", "replica_department"])
    }

    /// Applies a batch of events and the new feed position in one transaction; events at
    /// or below the stored position were applied before and are skipped. `restart`: issuance
    /// was restored to an earlier point (a new epoch), so its facts are the truth again and the
    /// replica is rebuilt from the start of the new epoch; machines and seats of licenses that
    /// no longer exist are left to no one (their keys find nothing). Returns the position after.
    @discardableResult
    func apply(_ events: [ChangeEvent], through cursor: FeedCursor? = nil, restart: Bool = false) async throws -> UInt64 {
        try await database.write { db in
            let stored = try FeedCursor.load(feed: Self.feed, in: db)
            if restart {
                try db.execute(sql: "DELETE FROM replica_license; DELETE FROM replica_department; DELETE FROM replica_signing_key")
            }
            var position = restart ? 0 : stored.appliedSeq
            for event in events where event.seq > position {
                switch event.subject {
                case .license(let license)? where !event.keyHash.isEmpty:
                    try Self.upsert(license, keyHash: event.keyHash, seq: event.seq, in: db)
                case .department(let department)?:
                    try Self.upsert(department, in: db)
                case .signingKey(let key)?:
                    try Self.upsert(key, in: db)
                default:
                    break
                }
                position = event.seq
            }
            position = max(position, cursor?.appliedSeq ?? 0)
            try FeedCursor(appliedSeq: position, epoch: cursor?.epoch ?? stored.epoch).store(feed: Self.feed, in: db)
            return position
        }
    }

    func position() async throws -> UInt64 {
        try await database.read { db in try FeedCursor.load(feed: Self.feed, in: db).appliedSeq }
    }

    /// Follows issuance's change feed into the replica. A signing key among the events, or a
    /// restart, makes `signingKeys` load again.
    func follower(issuance: RPCClient, signingKeys: SigningKeyCache, idleInterval: Duration, logger: Logger) -> FeedFollower<ChangeEvent> {
        FeedFollower(feed: Self.feed, database: database, idleInterval: idleInterval, logger: logger) { after in
            let response = try await issuance.call(IssuanceMethods.changes, ChangesRequest(afterSeq: after, limit: 1000), timeout: .seconds(5))
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.events.last?.seq ?? after, epoch: response.epoch)
        } apply: { events, cursor, restart in
            try await apply(events, through: cursor, restart: restart)
            if restart || events.contains(where: { if case .signingKey? = $0.subject { true } else { false } }) { signingKeys.invalidate() }
        }
    }

    private static func upsert(_ license: License, keyHash: String, seq: UInt64, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO replica_license (license_id, key_hash, tenant_id, product_id, customer_id, license_type, state,
                    starts_at, expires_at, grace_seconds, max_machines, max_users, max_seats, overage_permille,
                    features, allowed_regions, denied_regions, applied_seq, department_id, named_users, policy_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(license_id) DO UPDATE SET
                    key_hash = excluded.key_hash, tenant_id = excluded.tenant_id, product_id = excluded.product_id,
                    customer_id = excluded.customer_id, license_type = excluded.license_type, state = excluded.state,
                    starts_at = excluded.starts_at, expires_at = excluded.expires_at, grace_seconds = excluded.grace_seconds,
                    max_machines = excluded.max_machines, max_users = excluded.max_users, max_seats = excluded.max_seats,
                    overage_permille = excluded.overage_permille, features = excluded.features,
                    allowed_regions = excluded.allowed_regions, denied_regions = excluded.denied_regions,
                    applied_seq = excluded.applied_seq, department_id = excluded.department_id, named_users = excluded.named_users,
                    policy_id = excluded.policy_id
                """,
            arguments: [
                license.id, keyHash, license.tenantId, license.productId, license.customerId, license.licenseType.rawValue,
                license.state.rawValue, license.startsAt, license.expiresAt, license.graceSeconds, license.maxMachines,
                license.maxUsers, license.maxSeats, license.overagePermille, names(license.features),
                names(license.allowedRegions), names(license.deniedRegions), Int64(seq), license.departmentId, names(license.namedUsers),
                license.policyId,
            ])
        // A license moved to another department takes its machines' quota along.
        try db.execute(sql: "UPDATE machine SET department_id = ? WHERE license_id = ?", arguments: [license.departmentId, license.id])
    }

    private static func upsert(_ department: Department, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO replica_department (id, customer_id, max_seats, max_machines) VALUES (?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, max_seats = excluded.max_seats, max_machines = excluded.max_machines
                """,
            arguments: [department.id, department.customerId, department.maxSeats, department.maxMachines])
    }

    private static func upsert(_ key: SealedSigningKey, in db: Database) throws {
        if key.current {
            try db.execute(sql: "UPDATE replica_signing_key SET current = 0 WHERE current = 1")
        }
        if try Bool.fetchOne(db, sql: "SELECT 1 FROM replica_signing_key WHERE kid = ?", arguments: [key.kid]) == true {
            try db.execute(
                sql: "UPDATE replica_signing_key SET retired_at = ?, current = CASE WHEN ? > 0 THEN 0 ELSE current END WHERE kid = ?",
                arguments: [key.retiredAt, key.retiredAt, key.kid])
        } else {
            try db.execute(
                sql: "INSERT INTO replica_signing_key (kid, public_key, sealed_private_key, created_at, retired_at, current) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [key.kid, Data(key.publicKey), Data(key.sealedPrivateKey), key.createdAt, key.retiredAt, key.current])
        }
    }

    /// The facts for a key hash, or nil when no license has it.
    ///
    /// Read synchronously on the calling thread: an indexed look-up takes microseconds, far
    /// less than handing the read to GRDB's queue and resuming afterwards (the hop dominated
    /// the validate path's profile).
    func facts(keyHash: String) throws -> LicenseFacts? {
        try lookups.read { db in try Self.facts(keyHash: keyHash, in: db) }
    }

    static func facts(keyHash: String, in db: Database) throws -> LicenseFacts? {
        let statement = try db.cachedStatement(sql: """
            SELECT license_id, state, starts_at, expires_at, grace_seconds, features, allowed_regions, denied_regions,
                license_type, max_machines, max_users, max_seats, overage_permille, named_users, department_id, tenant_id
            FROM replica_license WHERE key_hash = ?
            """)
        return try LookupRow.first(statement, keyHash) { row in facts(row) }
    }

    /// The facts of a license by its id (seat heartbeats re-check the license they hold).
    static func facts(licenseID: String, in db: Database) throws -> LicenseFacts? {
        let statement = try db.cachedStatement(sql: """
            SELECT license_id, state, starts_at, expires_at, grace_seconds, features, allowed_regions, denied_regions,
                license_type, max_machines, max_users, max_seats, overage_permille, named_users, department_id, tenant_id
            FROM replica_license WHERE license_id = ?
            """)
        return try LookupRow.first(statement, licenseID) { row in facts(row) }
    }

    /// Facts from a row whose first 16 columns are those of `facts(keyHash:in:)`.
    private static func facts(_ row: borrowing LookupRow) -> LicenseFacts {
        LicenseFacts(
            licenseID: row.text(0), state: LicenseState(rawValue: row.int32(1)), startsAt: row.int64(2), expiresAt: row.int64(3),
            graceSeconds: row.int64(4), features: names(row.text(5)), allowedRegions: names(row.text(6)),
            deniedRegions: names(row.text(7)), licenseType: LicenseType(rawValue: row.int32(8)), maxMachines: row.uint32(9),
            maxUsers: row.uint32(10), maxSeats: row.uint32(11), overagePermille: row.uint32(12), namedUsers: names(row.text(13)),
            departmentID: row.text(14), tenantID: row.text(15))
    }

    /// The facts for a key hash and, for a node-locked license asked about a fingerprint,
    /// where that fingerprint stands: one statement, so one snapshot of both.
    func factsAndMachine(keyHash: String, fingerprintHash: String) throws -> (LicenseFacts, MachineStanding)? {
        try lookups.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT license_id, state, starts_at, expires_at, grace_seconds, features, allowed_regions, denied_regions,
                    license_type, max_machines, max_users, max_seats, overage_permille, named_users, department_id, tenant_id,
                    CASE WHEN ?1 != '' THEN
                        (SELECT fingerprint_hash = ?1 FROM machine WHERE machine.license_id = replica_license.license_id
                         ORDER BY fingerprint_hash = ?1 DESC LIMIT 1)
                    END
                FROM replica_license WHERE key_hash = ?2
                """)
            return try LookupRow.first(statement, fingerprintHash, keyHash) { row -> (LicenseFacts, MachineStanding) in
                let facts = Self.facts(row)
                guard facts.isNodeLocked, !fingerprintHash.isEmpty else { return (facts, .unknown) }
                // NULL: the license has no machine; 0: it has others; 1: this one is activated.
                guard !row.isNull(16) else { return (facts, .notActivated(licenseHasMachines: false)) }
                return (facts, row.int64(16) != 0 ? .activated : .notActivated(licenseHasMachines: true))
            }
        }
    }

    static func department(_ id: String, in db: Database) throws -> (maxSeats: UInt32, maxMachines: UInt32)? {
        guard !id.isEmpty, let row = try Row.fetchOne(db, sql: "SELECT max_seats, max_machines FROM replica_department WHERE id = ?", arguments: [id]) else {
            return nil
        }
        return (row[0], row[1])
    }

    /// The current signing key, sealed; nil until issuance's first key has arrived.
    func currentSealedKey() async throws -> (kid: String, publicKey: [UInt8], sealed: [UInt8])? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT kid, public_key, sealed_private_key FROM replica_signing_key WHERE current = 1 AND retired_at = 0").map {
                ($0["kid"] as String, Array($0["public_key"] as Data), Array($0["sealed_private_key"] as Data))
            }
        }
    }

    private static func names(_ text: String) -> [String] {
        text.isEmpty ? [] : text.split(separator: ",").map(String.init)
    }

    private static func names(_ list: [String]) -> String {
        list.joined(separator: ",")
    }
}

/// The current signing key, kept opened so a signature costs no decryption (or, for a key in
/// a PKCS#11 token, the token's signer).
final class SigningKeyCache: Sendable {
    private let replica: LicenseReplica
    private let custody: SigningCustody
    private let opened = Mutex<(any CertificateSigner)?>(nil)

    init(replica: LicenseReplica, custody: SigningCustody) {
        self.replica = replica
        self.custody = custody
    }

    /// The key if it is loaded and signs in this process, so a signature can be made on the
    /// event loop; nil means ask `current()` off the loop (a token call may wait on a device).
    var loaded: CertificateSigningKey? { opened.withLock { $0 } as? CertificateSigningKey }

    func current() async throws -> (any CertificateSigner)? {
        if let key = opened.withLock({ $0 }) { return key }
        guard let stored = try await replica.currentSealedKey() else { return nil }
        let key = try custody.signer(kid: stored.kid, publicKey: stored.publicKey, sealed: stored.sealed)
        opened.withLock { $0 = key }
        return key
    }

    /// Called when the feed brought a key change: the next signature loads the new current key.
    func invalidate() {
        opened.withLock { $0 = nil }
    }
}
