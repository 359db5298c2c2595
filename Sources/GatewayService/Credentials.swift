import Synchronization
import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

/// API credentials: a high-entropy secret shown once at creation and stored only as its
/// SHA-256 (a secret of 256 random bits needs no slow hash), bound to a tenant and a role.
/// All credentials are held in memory, so authenticating a call costs one hash and one
/// dictionary look-up; the database is the record that survives restarts.
final class CredentialStore: Sendable {
    /// The tenant of the operators who run the system; its admins manage every tenant's keys.
    static let operatorTenant = "default"

    private let database: DatabasePool
    private let bySecretHash = Mutex<[String: ApiKey]>([:])

    init(database: DatabasePool) throws {
        self.database = database
        let keys = try database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM api_key") }
        bySecretHash.withLock { map in
            for row in keys { map[row["secret_hash"]] = ApiKey(row: row) }
        }
    }

    static func generateSecret() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var generator = SystemRandomNumberGenerator()
        return "lmk_" + String((0..<52).map { _ in alphabet[Int(generator.next(upperBound: UInt8(32)))] })
    }

    static func hash(_ secret: String) -> String {
        Hex.encode(SHA256.hash(data: Array(secret.utf8)))
    }

    /// The usable credential for a secret, or nil (unknown, revoked or expired).
    func authenticate(_ secret: String, now: Int64) -> ApiKey? {
        guard secret.hasPrefix("lmk_"), secret.utf8.count < 200 else { return nil }
        // Hashed before taking the lock: every call on every event loop passes here.
        let hash = Self.hash(secret)
        guard let key = bySecretHash.withLock({ $0[hash] }) else { return nil }
        guard key.revokedAt == 0, key.expiresAt == 0 || now < key.expiresAt else { return nil }
        return key
    }

    func create(name: String, tenant: String, role: Role, expiresAt: Int64, now: Int64, secret: String = generateSecret()) async throws -> (ApiKey, String) {
        let hash = Self.hash(secret)
        let key = ApiKey(
            id: EntityID.make("key"), name: name, tenantId: tenant, role: role, createdAt: now, expiresAt: expiresAt,
            prefix: String(secret.prefix(12)))
        try await database.write { db in
            try db.execute(
                sql: "INSERT INTO api_key (id, tenant_id, name, role, secret_hash, prefix, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [key.id, key.tenantId, key.name, key.role.rawValue, hash, key.prefix, key.createdAt, key.expiresAt])
        }
        bySecretHash.withLock { $0[hash] = key }
        return (key, secret)
    }

    func list(tenant: String?) -> [ApiKey] {
        bySecretHash.withLock { map in
            map.values.filter { tenant == nil || $0.tenantId == tenant }.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        }
    }

    /// Revokes at once: the next call with the key is refused.
    func revoke(id: String, tenant: String?, now: Int64) async throws -> ApiKey {
        guard let (hash, key) = bySecretHash.withLock({ map in map.first { $0.value.id == id && (tenant == nil || $0.value.tenantId == tenant) } }) else {
            throw RPCError.notFound("no API key \(id)")
        }
        guard key.revokedAt == 0 else { return key }
        var revoked = key
        revoked.revokedAt = now
        try await database.write { db in
            try db.execute(sql: "UPDATE api_key SET revoked_at = ? WHERE id = ?", arguments: [now, id])
        }
        bySecretHash.withLock { $0[hash] = revoked }
        return revoked
    }

    /// When no admin credential exists yet, creates one for the operator tenant and writes
    /// its secret to `file` (mode 0600) for the operator to pick up.
    func bootstrapAdmin(file: String, now: Int64) async throws -> Bool {
        let hasAdmin = bySecretHash.withLock { map in map.values.contains { $0.role == .admin && $0.revokedAt == 0 } }
        guard !hasAdmin else { return false }
        // The file is on disk (synced, with its directory entry) before the key is committed:
        // a crash in between leaves a file whose key does not exist yet, and the next start
        // makes a new one; never a committed admin key whose secret nobody has.
        let secret = Self.generateSecret()
        try Secrets.replacePrivate(secret + "\n", at: file)
        _ = try await create(name: "bootstrap admin", tenant: Self.operatorTenant, role: .admin, expiresAt: 0, now: now, secret: secret)
        return true
    }
}

extension ApiKey {
    init(row: Row) {
        self.init(
            id: row["id"], name: row["name"], tenantId: row["tenant_id"], role: Role(rawValue: row["role"]),
            createdAt: row["created_at"], expiresAt: row["expires_at"], revokedAt: row["revoked_at"], prefix: row["prefix"])
    }
}
