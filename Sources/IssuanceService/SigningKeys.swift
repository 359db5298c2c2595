import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Ed25519 signing keys for license certificates. Private keys are sealed under the master
// key or live in a PKCS#11 token (`SigningCustody`); rotation makes a new key current while
// older ones keep verifying until they are retired.

extension IssuanceService {
    public func createSigningKey(_ request: CreateSigningKeyRequest, _ call: ServerCall) async throws -> SigningKey {
        try requireOperator(call)
        // Generated before the transaction: a token call must not hold the writer.
        let made = try signing.newKey()
        return try await mutate(call, action: call.method.hasSuffix("/RotateSigningKey") ? "signing_key.rotate" : "signing_key.create", target: \.kid) { db, context in
            try SigningKeyStore.insert(made, at: context.now, in: db)
        }
    }

    public func retireSigningKey(_ request: GetByIdRequest, _ call: ServerCall) async throws -> SigningKey {
        try requireOperator(call)
        try Check.nonEmpty(request.id, "id (the kid)")
        let retired = try await mutate(call, action: "signing_key.retire", target: \.kid) { db, context in
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
        // A token key is destroyed once the retirement is committed: it can never sign again.
        let sealed = try await database.read { db in try Data.fetchOne(db, sql: "SELECT sealed_private_key FROM signing_key WHERE kid = ?", arguments: [retired.kid]) }
        do {
            if let sealed { try signing.destroy(kid: retired.kid, sealed: Array(sealed)) }
        } catch {
            logger.warning("retired signing key could not be destroyed in the token; destroy it there by hand", metadata: ["kid": "\(retired.kid)", "error": "\(error)"])
        }
        return retired
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
        let signer = try await currentSigner()
        return try await mutate(call, action: "certificate.issue", target: { $0.payload?.licenseId ?? "" }) { db, context in
            let record = try StoredLicense.require(db, id: request.licenseId, tenant: context.tenant, vault: self.vault)
            let state = record.effectiveState(at: context.now)
            guard state == .active || state == .inGrace else {
                throw RPCError.failedPrecondition("license \(request.licenseId) is \(state); certificates are issued only for usable licenses")
            }
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
            return try LicenseCertificates.sign(payload, with: signer)
        }
    }

    /// The current key's signer; the first key is made if there is none yet.
    func currentSigner() async throws -> any CertificateSigner {
        if let current = try await database.read(SigningKeyStore.current) { return try signing.signer(current) }
        try ensureSigningKey()
        guard let current = try await database.read(SigningKeyStore.current) else { throw RPCError(.internal, "no current signing key") }
        return try signing.signer(current)
    }

    /// Makes the first signing key if there is none, so certificates can always be signed.
    func ensureSigningKey() throws {
        guard try database.read(SigningKeyStore.current) == nil else { return }
        let made = try signing.newKey()
        let kept = try database.write { db in
            // Another caller may have made one meanwhile: keep theirs.
            guard try SigningKeyStore.current(db) == nil else { return false }
            _ = try SigningKeyStore.insert(made, at: self.clock.now, in: db)
            return true
        }
        if !kept { try? signing.destroy(kid: made.kid, sealed: made.sealed) }
    }
}

extension SigningCustody {
    func signer(_ stored: SigningKeyStore.Stored) throws -> any CertificateSigner {
        try signer(kid: stored.kid, publicKey: stored.publicKey, sealed: stored.sealed)
    }
}

enum SigningKeyStore {
    struct Stored {
        let kid: String
        let publicKey: [UInt8]
        /// The private key sealed under the master key; empty for a key in the PKCS#11 token.
        let sealed: [UInt8]
    }

    /// Stores a new key as the current one and publishes it to validation (which signs
    /// activation certificates and answers with the same keys: it receives the sealed key,
    /// or for a token key only its kid, and signs through the same token).
    static func insert(_ made: (kid: String, publicKey: [UInt8], sealed: [UInt8]), at now: Int64, in db: Database) throws -> SigningKey {
        try db.execute(sql: "UPDATE signing_key SET current = 0 WHERE current = 1")
        try db.execute(
            sql: "INSERT INTO signing_key (kid, algorithm, public_key, sealed_private_key, created_at, current) VALUES (?, 'Ed25519', ?, ?, ?, 1)",
            arguments: [made.kid, Data(made.publicKey), Data(made.sealed), now])
        let replicated = SealedSigningKey(kid: made.kid, publicKey: made.publicKey, sealedPrivateKey: made.sealed, createdAt: now, current: true)
        try ChangeFeed.append(ChangeEvent(action: "signing_key.created", .signingKey(replicated)), at: now, in: db)
        return SigningKey(kid: made.kid, algorithm: "Ed25519", publicKey: made.publicKey, createdAt: now, current: true)
    }

    static func fetch(kid: String, in db: Database) throws -> SigningKey? {
        try Row.fetchOne(db, sql: "SELECT * FROM signing_key WHERE kid = ?", arguments: [kid]).map(SigningKey.init(row:))
    }

    static func current(_ db: Database) throws -> Stored? {
        try Row.fetchOne(db, sql: "SELECT kid, public_key, sealed_private_key FROM signing_key WHERE current = 1").map {
            Stored(kid: $0["kid"], publicKey: Array($0["public_key"] as Data), sealed: Array($0["sealed_private_key"] as Data))
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

// Master-key rotation: what issuance keeps sealed under the master key.
extension IssuanceService {
    var masterKeyRotation: MasterKeyRotation {
        MasterKeyRotation(
            service: "issuance", masterKey: masterKey, database: database,
            columns: [
                SealedColumn(table: "data_key", column: "wrapped", reads: ["owner"]) { CustomerVault.context($0["owner"]) },
                SealedColumn(table: "signing_key", column: "sealed_private_key", reads: ["kid"]) { $0["kid"] },
                SealedColumn(table: "idempotency", column: "response", reads: ["tenant_id", "key"], filter: "sealed = 1") {
                    IdempotencyStore.context($0["tenant_id"], $0["key"])
                },
            ])
    }

    public func rewrapSecrets(_ request: RewrapSecretsRequest, _ call: ServerCall) async throws -> RewrapSecretsResponse {
        try requireOperator(call)
        let (database, masterKey) = (self.database, self.masterKey)
        // The feed's history carries signing keys sealed as they were published: validation
        // reads them again when it rebuilds, so they are sealed again too.
        return try await masterKeyRotation.answer(
            request,
            extra: (
                rewrap: { try await database.write { db in try ChangeFeed.rewrapSigningKeys(masterKey: masterKey, in: db) } },
                census: { try await database.read { db in try ChangeFeed.signingKeyVersions(in: db) } }
            ))
    }
}

extension ChangeFeed {
    /// Published signing-key events, found by the sealed value's header.
    static func sealedSigningKeyEvents(in db: Database) throws -> [(seq: Int64, event: ChangeEvent, key: SealedSigningKey)] {
        try Row.fetchAll(db, sql: "SELECT seq, event FROM change_event WHERE instr(event, X'4D4B01') > 0").compactMap { row in
            let event = try ChangeEvent(serializedBytes: Array(row["event"] as Data))
            guard case .signingKey(let key)? = event.subject, !key.sealedPrivateKey.isEmpty else { return nil }
            return (row["seq"], event, key)
        }
    }

    static func rewrapSigningKeys(masterKey: MasterKey, in db: Database) throws -> UInt64 {
        var done: UInt64 = 0
        for (seq, var event, var key) in try sealedSigningKeyEvents(in: db) {
            guard let fresh = try masterKey.rewrap(key.sealedPrivateKey, context: key.kid) else { continue }
            key.sealedPrivateKey = fresh
            event.subject = .signingKey(key)
            try db.execute(sql: "UPDATE change_event SET event = ? WHERE seq = ?", arguments: [Data(event.serializedBytes()), seq])
            done += 1
        }
        return done
    }

    static func signingKeyVersions(in db: Database) throws -> [String: UInt64] {
        try sealedSigningKeyEvents(in: db).reduce(into: [:]) { uses, found in uses[MasterKey.version(of: found.key.sealedPrivateKey), default: 0] += 1 }
    }
}
