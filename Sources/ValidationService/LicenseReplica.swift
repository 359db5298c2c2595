import GRDB
import LicensingCore
import LicensingWire

/// Validation's copy of the license facts, applied from issuance's change feed.
struct LicenseReplica: Sendable {
    static let feed = "issuance"
    let database: DatabasePool

    /// Applies a batch of events and the new feed position in one transaction; events at
    /// or below the stored position were applied before and are skipped.
    /// Returns the position after the batch.
    func apply(_ events: [ChangeEvent]) async throws -> UInt64 {
        try await database.write { db in
            var position = try Self.position(in: db)
            for event in events where event.seq > position {
                if event.kind == .license, let license = event.license, !event.keyHash.isEmpty {
                    try Self.upsert(license, keyHash: event.keyHash, seq: event.seq, in: db)
                }
                position = event.seq
            }
            try db.execute(
                sql: "INSERT INTO feed_position (feed, applied_seq) VALUES (?, ?) ON CONFLICT(feed) DO UPDATE SET applied_seq = excluded.applied_seq",
                arguments: [Self.feed, Int64(position)])
            return position
        }
    }

    func position() async throws -> UInt64 {
        try await database.read { db in try Self.position(in: db) }
    }

    private static func position(in db: Database) throws -> UInt64 {
        UInt64(try Int64.fetchOne(db, sql: "SELECT applied_seq FROM feed_position WHERE feed = ?", arguments: [feed]) ?? 0)
    }

    private static func upsert(_ license: License, keyHash: String, seq: UInt64, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO replica_license (license_id, key_hash, tenant_id, product_id, customer_id, license_type, state,
                    starts_at, expires_at, grace_seconds, max_machines, max_users, max_seats, overage_permille,
                    features, allowed_regions, denied_regions, applied_seq)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(license_id) DO UPDATE SET
                    key_hash = excluded.key_hash, tenant_id = excluded.tenant_id, product_id = excluded.product_id,
                    customer_id = excluded.customer_id, license_type = excluded.license_type, state = excluded.state,
                    starts_at = excluded.starts_at, expires_at = excluded.expires_at, grace_seconds = excluded.grace_seconds,
                    max_machines = excluded.max_machines, max_users = excluded.max_users, max_seats = excluded.max_seats,
                    overage_permille = excluded.overage_permille, features = excluded.features,
                    allowed_regions = excluded.allowed_regions, denied_regions = excluded.denied_regions,
                    applied_seq = excluded.applied_seq
                """,
            arguments: [
                license.id, keyHash, license.tenantId, license.productId, license.customerId, license.licenseType.rawValue,
                license.state.rawValue, license.startsAt, license.expiresAt, license.graceSeconds, license.maxMachines,
                license.maxUsers, license.maxSeats, license.overagePermille, license.features.joined(separator: ","),
                license.allowedRegions.joined(separator: ","), license.deniedRegions.joined(separator: ","), Int64(seq),
            ])
    }

    /// The facts for a key hash, or nil when no license has it.
    func facts(keyHash: String) async throws -> LicenseFacts? {
        try await database.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT license_id, state, starts_at, expires_at, grace_seconds, features, allowed_regions, denied_regions
                FROM replica_license WHERE key_hash = ?
                """)
            guard let row = try Row.fetchOne(statement, arguments: [keyHash]) else { return nil }
            return LicenseFacts(
                licenseID: row[0], state: LicenseState(rawValue: row[1]), startsAt: row[2], expiresAt: row[3],
                graceSeconds: row[4], features: Self.names(row[5]), allowedRegions: Self.names(row[6]),
                deniedRegions: Self.names(row[7]))
        }
    }

    private static func names(_ text: String) -> [String] {
        text.isEmpty ? [] : text.split(separator: ",").map(String.init)
    }
}
