import Foundation
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Validate: the hot path. The decision is made on the event loop from the replica; only a
// denial (read-your-writes), a miss or the first load of the signing key waits.

extension ValidationService {
    /// What a validation works out before its look-up.
    struct ValidationContext {
        let now: Int64
        let fingerprintHash: String
        let region: String
        /// The key's stored hash (and whether it is an imported key), or why it is malformed.
        let key: Result<KeyReference, LicenseKeyError>

        /// A miss on an imported key is final at once: imports are bulk loads, not keys
        /// issued a moment ago, and text that merely looks like one must not cost a pull.
        var importedKey: Bool { (try? key.get())?.imported ?? false }
    }

    private func context(_ request: ValidateRequest) throws -> ValidationContext {
        guard request.nonce.count <= 64 else { throw RPCError.invalidArgument("nonce is longer than 64 bytes") }
        try Check.statedRegion(request.region)
        return ValidationContext(
            now: clock.now, fingerprintHash: request.fingerprint.isEmpty ? "" : LicenseCertificates.fingerprintHash(request.fingerprint),
            region: region(stated: request.region, clientIP: request.clientIp), key: Result { () throws(LicenseKeyError) in try KeyReference(parsing: request.licenseKey, secret: keyHashSecret) })
    }

    /// Validates on the event loop, as the request is read: the key, one indexed read of
    /// the replica and the decision need no waiting. Only what could wait moves to a task:
    /// a miss (the feed is pulled once first), the first load of the signing key, a full
    /// validation log.
    public func validate(_ request: ValidateRequest, _ call: ServerCall) throws -> Immediate<ValidateResponse> {
        let context = try context(request)
        var signingKey: (any CertificateSigner)?
        if !request.nonce.isEmpty {
            guard let loaded = signingKeys.loaded else { return .later { try await self.validateAfterWaiting(request, call) } }
            signingKey = loaded
        }
        var found: (LicenseFacts, MachineStanding)?
        if case .success(let key) = context.key {
            if let hit = try replica.factsAndMachine(keyHash: key.hash, fingerprintHash: context.fingerprintHash) {
                found = visible(hit, to: call)
            } else if !key.imported {
                return .later { try await self.validateAfterWaiting(request, call) }
            }
        }
        let (response, entry) = try answer(request, context, found, signedBy: signingKey)
        // A denial is given only once the replica has caught up (see `validateAfterWaiting`).
        if Self.mayBeStale(response, context) { return .later { try await self.validateAfterWaiting(request, call, denied: response.reason) } }
        outcomes[entry.reason.rawValue]?.increment()
        guard log.tryAppend(entry) else {
            return .later {
                await self.log.append(entry)
                return response
            }
        }
        return .answer(response)
    }

    /// Validation that may wait: before a denial, or before the signing key is loaded.
    ///
    /// Read-your-writes: a change that grants rights (a license issued, renewed, reinstated,
    /// a user assigned, a feature added) must be seen by the next call, whoever makes it. So
    /// a denial is given only after the replica has caught up with issuance's head (one
    /// pull shared by every call waiting, bounded by the pull's timeout); an allowed answer
    /// needs no wait. A revocation may take up to the feed interval; a grant may not.
    /// A quota denial catches up with usage's feed instead (a limit raised a moment ago).
    /// `denied`: the denial the event loop already found, so its catch-up comes first.
    func validateAfterWaiting(_ request: ValidateRequest, _ call: ServerCall, denied: ReasonCode? = nil) async throws -> ValidateResponse {
        let context = try context(request)
        func decided() async throws -> (ValidateResponse, ValidationLog.Entry) {
            // Loaded for each try: just after a start the first key may come with a catch-up.
            let signingKey = request.nonce.isEmpty ? nil : try await signingKeys.current()
            var found: (LicenseFacts, MachineStanding)?
            if case .success(let key) = context.key,
                let hit = try replica.factsAndMachine(keyHash: key.hash, fingerprintHash: context.fingerprintHash)
            {
                found = visible(hit, to: call)
            }
            return try answer(request, context, found, signedBy: signingKey)
        }
        if let denied { await catchUp(before: denied) }
        var (response, entry) = try await decided()
        if Self.mayBeStale(response, context), response.reason != denied {
            await catchUp(before: response.reason)
            (response, entry) = try await decided()
        }
        outcomes[entry.reason.rawValue]?.increment()
        await log.append(entry)
        return response
    }

    /// A denial that a change not yet replicated could turn into a grant; a malformed key
    /// stays malformed whatever issuance knows, and an imported key that is not found is
    /// not waited for (see `ValidationContext.importedKey`).
    static func mayBeStale(_ response: ValidateResponse, _ context: ValidationContext) -> Bool {
        !response.valid && response.reason != .malformedKey && !(context.importedKey && response.reason == .notFound)
    }

    /// Catches up with the source of a denial: usage's feed for a quota (a limit raised a
    /// moment ago), issuance's for anything else and, on a replica, the primary's machines
    /// too (a machine activated a moment ago, through another replica or the primary).
    private func catchUp(before reason: ReasonCode) async {
        if reason == .quotaExceeded {
            await quotaFeed?.catchUp()
            return
        }
        async let machines: Void = machineMirror?.catchUp() ?? ()
        await feed.catchUp()
        await machines
    }

    /// The decision on what the look-up found (nil: no license of the caller's tenant has
    /// the key), the answer, signed when the client sent a nonce (and a signing key
    /// exists), and its entry for the validation log.
    /// Named users arrive from issuance as pseudonyms: the caller's user is compared as one.
    func userKey(_ user: String, _ facts: LicenseFacts?) -> String? {
        guard let facts, facts.needsNamedUser, !user.isEmpty else { return nil }
        return keyHashSecret.namedUserPseudonym(license: facts.licenseID, user: user)
    }

    private func answer(
        _ request: ValidateRequest, _ context: ValidationContext, _ found: (LicenseFacts, MachineStanding)?,
        signedBy key: (any CertificateSigner)?
    ) throws -> (ValidateResponse, ValidationLog.Entry) {
        let (now, fingerprintHash, region) = (context.now, context.fingerprintHash, context.region)
        let decision: LicenseDecision
        var facts: LicenseFacts?
        switch context.key {
        case .failure(let error):
            decision = LicenseDecision(reason: .malformedKey, state: .unspecified, detail: "license_key: \(error)")
        case .success:
            facts = found?.0
            let query = ValidationQuery(
                feature: request.feature, region: region, user: request.user, userKey: userKey(request.user, facts), machine: found?.1 ?? .unknown)
            var decided = LicenseDecider.decide(facts, query, now: now)
            if decided.allows, !request.feature.isEmpty, let facts, let block = quotas.block(license: facts.licenseID, feature: request.feature, now: now) {
                decided = LicenseDecision(
                    reason: .quotaExceeded, state: decided.state,
                    detail: "feature \(request.feature) has used \(block.used) of its \(block.limit)-per-\(block.period) quota"
                        + (block.until == 0 ? "" : "; it resets at \(ISODate.format(block.until))"))
            }
            decision = decided
        }
        var response = ValidateResponse(
            reason: decision.reason, valid: decision.allows, licenseId: facts?.licenseID ?? "", state: decision.state,
            expiresAt: facts?.expiresAt ?? 0, graceEndsAt: facts?.graceEndsAt ?? 0,
            features: decision.allows ? facts?.features ?? [] : [], serverTime: now, detail: decision.detail)
        // Signing costs one Ed25519 signature; only clients that ask (with a nonce) pay for it.
        if !request.nonce.isEmpty, let key {
            let statement = ValidationStatement(
                version: 1, reason: response.reason, licenseId: response.licenseId, expiresAt: response.expiresAt,
                graceEndsAt: response.graceEndsAt, features: response.features, serverTime: now, nonce: request.nonce,
                fingerprintSha256: fingerprintHash)
            response.statement = statement.serializedBytes()
            response.kid = key.kid
            response.signature = try key.sign(response.statement)
        }
        let entry = ValidationLog.Entry(
            occurredAt: now, licenseID: facts?.licenseID ?? "", reason: decision.reason, fingerprintHash: fingerprintHash,
            region: region, feature: request.feature)
        return (response, entry)
    }
}
