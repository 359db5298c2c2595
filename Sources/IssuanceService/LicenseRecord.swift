import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

/// A stored license with what only issuance knows (its key hash).
struct LicenseRecord {
    var license: License
    let keyHash: String

    static func fetch(_ db: Database, sql condition: String, _ arguments: StatementArguments, tenant: String, vault: CustomerVault) throws -> LicenseRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM license WHERE \(condition) AND tenant_id = ?", arguments: arguments + [tenant]) else {
            return nil
        }
        var license = License(row: row)
        license.namedUsers = try vault.namedUsers(license: license.id, customer: license.customerId, in: db)
        return LicenseRecord(license: license, keyHash: row["key_hash"])
    }

    static func fetch(_ db: Database, id: String, tenant: String, vault: CustomerVault) throws -> LicenseRecord? {
        try fetch(db, sql: "id = ?", [id], tenant: tenant, vault: vault)
    }

    static func require(_ db: Database, id: String, tenant: String, vault: CustomerVault) throws -> LicenseRecord {
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
        try db.execute(
            sql: """
                UPDATE license SET customer_id = ?, department_id = ?, state = ?, state_reason = ?, expires_at = ?,
                    grace_seconds = ?, max_machines = ?, max_users = ?, max_seats = ?, features = ?, updated_at = ?
                WHERE id = ?
                """,
            arguments: [
                license.customerId, license.departmentId, license.state.rawValue, license.stateReason, license.expiresAt,
                license.graceSeconds, license.maxMachines, license.maxUsers, license.maxSeats, NameList.encode(license.features),
                now, license.id,
            ])
        license.feedSeq = try ChangeFeed.append(ChangeEvent(action: action, .license(Self.published(license, in: db)), keyHash: keyHash), at: now, in: db)
        return license
    }
}
