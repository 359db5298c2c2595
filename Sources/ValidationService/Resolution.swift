import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

// Other services receive license keys from callers (usage events) but hold no key-hash
// secret: validation tells them which license, of which tenant, a key or an id names.

extension ValidationService {
    /// Resolves up to 1,000 references. A reference of another tenant than the caller's is
    /// not found, like one that does not exist; a key unknown to the replica pulls the feed
    /// once first (it may have been issued a moment ago).
    public func resolveLicenses(_ request: ResolveLicensesRequest, _ call: ServerCall) async throws -> ResolveLicensesResponse {
        guard request.licenses.count <= 1000 else {
            throw RPCError.invalidArgument("at most 1000 licenses per call, got \(request.licenses.count)")
        }
        let tenant = call.metadata[RPCMetadata.tenant]
        var caughtUp = false
        var resolved: [ResolvedLicense] = []
        // A batch of usage events mostly names a few licenses many times: each is looked up once.
        var seen: [String: ResolvedLicense?] = [:]
        for reference in request.licenses {
            let memo = reference.licenseKey.isEmpty ? "id:" + reference.licenseId : "key:" + reference.licenseKey
            var found: ResolvedLicense?
            if let known = seen[memo] {
                found = known
            } else {
                found = try lookUpReference(reference)
                if found == nil, !caughtUp {
                    await feed.catchUp()
                    caughtUp = true
                    found = try lookUpReference(reference)
                }
                seen[memo] = found
            }
            if let found, tenant == nil || found.tenantId == tenant {
                resolved.append(found)
            } else {
                resolved.append(ResolvedLicense(found: false))
            }
        }
        return ResolveLicensesResponse(licenses: resolved)
    }

    private func lookUpReference(_ reference: LicenseReference) throws -> ResolvedLicense? {
        var licenseID = reference.licenseId
        if !reference.licenseKey.isEmpty {
            guard let key = try? KeyReference(parsing: reference.licenseKey, secret: keyHashSecret),
                let facts = try replica.facts(keyHash: key.hash)
            else { return nil }
            licenseID = facts.licenseID
        }
        guard !licenseID.isEmpty else { return nil }
        return try database.read { db in
            try Row.fetchOne(
                db, sql: "SELECT license_id, tenant_id, policy_id, overage_permille FROM replica_license WHERE license_id = ?", arguments: [licenseID]
            ).map { ResolvedLicense(found: true, licenseId: $0[0], tenantId: $0[1], policyId: $0[2], overagePermille: $0[3]) }
        }
    }
}
