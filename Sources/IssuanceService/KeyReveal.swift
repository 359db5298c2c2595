import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

/// A key issued from a purchase is not answered to the billing integration: it is kept for
/// one reveal by the buyer, encrypted (AES-GCM) under a key derived from a random token
/// that only the buyer's link carries — issuance keeps the token's hash, so neither its
/// database nor its master key can open it. The reveal deletes it; an unrevealed key is
/// deleted when its link expires or its customer is erased.
enum KeyReveal {
    static let validSeconds: Int64 = 14 * 86400

    static func tokenHash(_ token: String) -> String {
        Hex.encode(SHA256.hash(data: Array(token.utf8)))
    }

    /// The encryption key: from the token alone, bound to the tenant and license (a row
    /// copied elsewhere opens nowhere).
    static func sealingKey(token: String, tenant: String, license: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: Array(token.utf8)), salt: Array("license-manager key reveal".utf8),
            info: Array("\(tenant)\u{0}\(license)".utf8), outputByteCount: 32)
    }

    static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return "lmr_" + Base64URL.encode(bytes)
    }

    /// Seals `key` for one reveal; returns the token and when it expires.
    static func seal(_ key: LicenseKey, license: String, context: MutationContext, in db: Database) throws -> (String, Int64) {
        let token = newToken()
        let hash = tokenHash(token)
        let expiresAt = context.now + validSeconds
        let sealed = try AES.GCM.seal(Array(key.description.utf8), using: sealingKey(token: token, tenant: context.tenant, license: license)).combined ?? Data()
        try db.execute(sql: "DELETE FROM sealed_key WHERE expires_at <= ?", arguments: [context.now])
        try db.execute(
            sql: "INSERT INTO sealed_key (token_hash, tenant_id, license_id, sealed, expires_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [hash, context.tenant, license, sealed, expiresAt])
        return (token, expiresAt)
    }
}

extension IssuanceService {
    /// The one reveal: answers the key and deletes it in the same transaction.
    public func revealKey(_ request: RevealKeyRequest, _ call: ServerCall) async throws -> RevealKeyResponse {
        guard request.token.hasPrefix("lmr_"), request.token.utf8.count <= 100 else {
            throw RPCError.invalidArgument("this is not a key reveal link")
        }
        let hash = KeyReveal.tokenHash(request.token)
        return try await mutate(call, action: "license.key_revealed", target: { $0.licenseId }) { db, context in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT license_id, sealed FROM sealed_key WHERE token_hash = ? AND tenant_id = ? AND expires_at > ?",
                arguments: [hash, context.tenant, context.now])
            else {
                throw RPCError.notFound("this link has been used already or has expired: a key is shown only once; ask the vendor for a new link")
            }
            let license: String = row["license_id"]
            let opened = try AES.GCM.open(
                AES.GCM.SealedBox(combined: row["sealed"] as Data), using: KeyReveal.sealingKey(token: request.token, tenant: context.tenant, license: license))
            try db.execute(sql: "DELETE FROM sealed_key WHERE token_hash = ?", arguments: [hash])
            return RevealKeyResponse(licenseId: license, licenseKey: String(decoding: opened, as: UTF8.self))
        }
    }
}
