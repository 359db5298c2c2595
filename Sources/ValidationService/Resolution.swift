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
        for reference in request.licenses {
            var found = try lookUpReference(reference)
            if found == nil, !caughtUp {
                await feed.catchUp()
                caughtUp = true
                found = try lookUpReference(reference)
            }
            if let (id, owner) = found, tenant == nil || owner == tenant {
                resolved.append(ResolvedLicense(found: true, licenseId: id, tenantId: owner))
            } else {
                resolved.append(ResolvedLicense(found: false))
            }
        }
        return ResolveLicensesResponse(licenses: resolved)
    }

    private func lookUpReference(_ reference: LicenseReference) throws -> (id: String, tenant: String)? {
        if !reference.licenseKey.isEmpty {
            guard let key = try? LicenseKey(parsing: reference.licenseKey),
                let facts = try replica.facts(keyHash: key.hash(secret: keyHashSecret))
            else { return nil }
            return (facts.licenseID, facts.tenantID)
        }
        guard !reference.licenseId.isEmpty else { return nil }
        return try database.read { db in
            try Row.fetchOne(db, sql: "SELECT license_id, tenant_id FROM replica_license WHERE license_id = ?", arguments: [reference.licenseId])
                .map { ($0[0] as String, $0[1] as String) }
        }
    }
}
