import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Ed25519 signing keys for license certificates. Private keys are stored sealed under the
// master key; rotation makes a new key current while older ones keep verifying until
// they are retired.

extension IssuanceService {
    public func createSigningKey(_ request: CreateSigningKeyRequest, _ call: ServerCall) async throws -> SigningKey {
        try requireOperator(call)
        let masterKey = self.masterKey
        return try await mutate(call, action: call.method.hasSuffix("/RotateSigningKey") ? "signing_key.rotate" : "signing_key.create", target: \.kid) { db, context in
            try SigningKeyStore.create(masterKey: masterKey, at: context.now, in: db)
        }
    }

    public func retireSigningKey(_ request: GetByIdRequest, _ call: ServerCall) async throws -> SigningKey {
        try requireOperator(call)
        try Check.nonEmpty(request.id, "id (the kid)")
        return try await mutate(call, action: "signing_key.retire", target: \.kid) { db, context in
            guard var key = try SigningKeyStore.fetch(kid: request.id, in: db) else {
                throw RPCError.notFound("no signing key \(request.id)")
            }
            guard !key.current else {
                throw RPCError.failedPrecondition("signing key \(key.kid) is current; rotate to a new key before retiring it")
            }
            guard key.retiredAt == 0 else { throw RPCError.failedPrecondition("signing key \(key.kid) is already retired") }
            key.retiredAt = context.now
            try db.execute(sql: "UPDATE signing_key SET retired_at = ? WHERE kid = ?", arguments: [context.now, key.kid])
            let replicated = SealedSigningKey(kid: key.kid, publicKey: key.publicKey, createdAt: key.createdAt, retiredAt: key.retiredAt)
            try ChangeFeed.append(ChangeEvent(action: "signing_key.retired", .signingKey(replicated)), at: context.now, in: db)
            return key
        }
    }

    /// The keys that verify certificates: every key not retired.
    public func listPublicKeys(_ request: ListPublicKeysRequest, _ call: ServerCall) async throws -> PublicKeySet {
        try await database.read { db in
            PublicKeySet(keys: try Row.fetchAll(db, sql: "SELECT * FROM signing_key WHERE retired_at = 0 ORDER BY created_at").map(SigningKey.init(row:)))
        }
    }

    /// A signed certificate of a license's facts, optionally bound to one machine.
    public func issueCertificate(_ request: IssueCertificateRequest, _ call: ServerCall) async throws -> LicenseCertificate {
        try Check.nonEmpty(request.licenseId, "license_id")
        try Check.nonNegative(request.validSeconds, "valid_seconds")
        try Check.length(request.fingerprint, "fingerprint", max: 1000)
        let masterKey = self.masterKey
        return try await mutate(call, action: "certificate.issue", target: { $0.payload?.licenseId ?? "" }) { db, context in
            let record = try LicenseRecord.require(db, id: request.licenseId, tenant: context.tenant, vault: self.vault)
            let state = record.effectiveState(at: context.now)
            guard state == .active || state == .inGrace else {
                throw RPCError.failedPrecondition("license \(request.licenseId) is \(state); certificates are issued only for usable licenses")
            }
            let key = try SigningKeyStore.current(masterKey: masterKey, at: context.now, in: db)
            let licenseEnd = record.facts.graceEndsAt
            var notAfter = request.validSeconds != 0 ? context.now + request.validSeconds : (licenseEnd != 0 ? licenseEnd : context.now + 365 * 86400)
            if licenseEnd != 0 { notAfter = min(notAfter, licenseEnd) }
            let license = record.license
            let payload = CertificatePayload(
                version: LicenseCertificates.currentVersion, licenseId: license.id, productId: license.productId,
                customerId: license.customerId, licenseType: license.licenseType, features: license.features,
                notBefore: context.now, notAfter: notAfter, licenseExpiresAt: license.expiresAt, graceSeconds: license.graceSeconds,
                fingerprintSha256: request.fingerprint.isEmpty ? "" : LicenseCertificates.fingerprintHash(request.fingerprint),
                issuedAt: context.now, maxMachines: license.maxMachines, maxSeats: license.maxSeats)
            return LicenseCertificates.sign(payload, with: key)
        }
    }
}

enum SigningKeyStore {
    static func create(masterKey: MasterKey, at now: Int64, in db: Database) throws -> SigningKey {
        let key = CertificateSigningKey.generate()
        try db.execute(sql: "UPDATE signing_key SET current = 0 WHERE current = 1")
        let sealed = masterKey.seal(key.privateKey, context: key.kid)
        try db.execute(
            sql: "INSERT INTO signing_key (kid, algorithm, public_key, sealed_private_key, created_at, current) VALUES (?, 'Ed25519', ?, ?, ?, 1)",
            arguments: [key.kid, Data(key.publicKey), Data(sealed), now])
        // Validation signs activation certificates and answers with the same keys; it
        // receives them sealed and opens them with the master key the two share.
        let replicated = SealedSigningKey(kid: key.kid, publicKey: key.publicKey, sealedPrivateKey: sealed, createdAt: now, current: true)
        try ChangeFeed.append(ChangeEvent(action: "signing_key.created", .signingKey(replicated)), at: now, in: db)
        return SigningKey(kid: key.kid, algorithm: "Ed25519", publicKey: key.publicKey, createdAt: now, current: true)
    }

    static func fetch(kid: String, in db: Database) throws -> SigningKey? {
        try Row.fetchOne(db, sql: "SELECT * FROM signing_key WHERE kid = ?", arguments: [kid]).map(SigningKey.init(row:))
    }

    /// Creates the first key if there is none, so certificates can always be signed.
    static func ensureCurrent(masterKey: MasterKey, at now: Int64, in db: Database) throws {
        if try Row.fetchOne(db, sql: "SELECT 1 FROM signing_key WHERE current = 1") == nil {
            _ = try create(masterKey: masterKey, at: now, in: db)
        }
    }

    /// The current key, opened with the master key.
    static func current(masterKey: MasterKey, at now: Int64, in db: Database) throws -> CertificateSigningKey {
        try ensureCurrent(masterKey: masterKey, at: now, in: db)
        let row = try Row.fetchOne(db, sql: "SELECT kid, sealed_private_key FROM signing_key WHERE current = 1")!
        let kid: String = row["kid"]
        let sealed: Data = row["sealed_private_key"]
        do {
            return try CertificateSigningKey(privateKey: try masterKey.open(Array(sealed), context: kid))
        } catch {
            throw RPCError(.internal, "signing key \(kid) does not open with the configured master key")
        }
    }
}

extension SigningKey {
    init(row: Row) {
        self.init(
            kid: row["kid"], algorithm: row["algorithm"], publicKey: Array(row["public_key"] as Data),
            createdAt: row["created_at"], retiredAt: row["retired_at"], current: row["current"])
    }
}
