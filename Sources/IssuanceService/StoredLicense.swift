import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

/// A stored license with what only issuance knows (its key hash).
struct StoredLicense {
    var license: License
    let keyHash: String

    static func fetch(_ db: Database, _ request: QueryInterfaceRequest<LicenseRecord>, tenant: String, vault: CustomerVault) throws -> StoredLicense? {
        guard let record = try request.owned(by: tenant).fetchOne(db) else { return nil }
        var license = record.message
        license.namedUsers = try vault.namedUsers(license: license.id, customer: license.customerId, in: db)
        return StoredLicense(license: license, keyHash: record.keyHash)
    }

    static func fetch(_ db: Database, id: String, tenant: String, vault: CustomerVault) throws -> StoredLicense? {
        try fetch(db, LicenseRecord.filter(id: id), tenant: tenant, vault: vault)
    }

    static func require(_ db: Database, id: String, tenant: String, vault: CustomerVault) throws -> StoredLicense {
        guard let record = try fetch(db, id: id, tenant: tenant, vault: vault) else { throw RPCError.notFound("no license \(id)") }
        return record
    }

    var facts: LicenseFacts {
        LicenseFacts(licenseID: license.id, state: license.state, startsAt: license.startsAt, expiresAt: license.expiresAt, graceSeconds: license.graceSeconds)
    }

    func effectiveState(at now: Int64) -> LicenseState { facts.effectiveState(at: now) }

    /// The state the dates alone give (ignoring suspension and revocation).
    func stateByTime(at now: Int64) -> LicenseState {
        var facts = self.facts
        facts.state = .active
        return facts.effectiveState(at: now)
    }

    /// A license as the change feed carries it: named users as pseudonyms (personal data
    /// stays in issuance; validation compares pseudonyms).
    static func published(_ license: License, in db: Database) throws -> License {
        var published = license
        published.namedUsers = try CustomerVault.pseudonyms(license: license.id, in: db)
        return published
    }

    /// Writes every mutable column and publishes the new state on the change feed.
    func save(action: String, at now: Int64, in db: Database) throws -> License {
        var license = self.license
        license.updatedAt = now
        // Every column is written; the ones that never change after issue are written as they are.
        try LicenseRecord(license, keyHash: keyHash).update(db)
        license.feedSeq = try ChangeFeed.append(ChangeEvent(action: action, .license(Self.published(license, in: db)), keyHash: keyHash), at: now, in: db)
        return license
    }
}
