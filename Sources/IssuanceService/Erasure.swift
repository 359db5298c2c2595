import Foundation
import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire

extension IssuanceService {
    /// GDPR erasure of a customer's personal data: its data key is destroyed (which leaves
    /// its name, e-mail, CRM id and named users unreadable wherever a copy lies), and the
    /// sealed rows, an unrevealed purchased key and the named users' pseudonyms in the feed
    /// go too. Licenses themselves stay (they are the vendor's contract records). The
    /// erasure is recorded in the ``ErasureLedger`` first. Running it again erases nothing more.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        try Check.nonEmpty(request.customerId, "customer_id")
        let tenant = tenant(call)
        guard try await database.read({ db in try Bool.fetchOne(db, sql: "SELECT 1 FROM customer WHERE id = ? AND tenant_id = ?", arguments: [request.customerId, tenant]) }) == true else {
            throw RPCError.notFound("no customer \(request.customerId)")
        }
        try erasures.record(ErasureLedger.Entry(tenant: tenant, customer: request.customerId, erasedAt: clock.now))
        return try await mutate(call, action: "customer.erase", target: { _ in request.customerId }) { db, context in
            let erased = try self.erase(customer: request.customerId, tenant: context.tenant, at: context.now, in: db)
            return EraseCustomerResponse(
                service: "issuance", recordsErased: erased,
                detail: "customer \(request.customerId): data key destroyed; name, e-mail, CRM id and named users erased")
        }
    }

    /// Carries out an erasure; what it removed (0 when it was done before).
    func erase(customer: String, tenant: String, at now: Int64, in db: Database) throws -> UInt64 {
        var erased: UInt64 = try vault.shred(customer, in: db) ? 1 : 0
        try db.execute(sql: "UPDATE customer SET contact = NULL, crm_hash = '' WHERE id = ? AND (contact IS NOT NULL OR crm_hash != '')", arguments: [customer])
        erased += UInt64(db.changesCount)
        let licenseIDs = try String.fetchAll(db, sql: "SELECT id FROM license WHERE customer_id = ?", arguments: [customer])
        for id in licenseIDs {
            // An unrevealed purchased key goes too: its link was sent to the erased address.
            try db.execute(sql: "DELETE FROM sealed_key WHERE license_id = ?", arguments: [id])
            erased += UInt64(db.changesCount)
            try db.execute(sql: "DELETE FROM license_user WHERE license_id = ?", arguments: [id])
            if db.changesCount > 0 {
                erased += UInt64(db.changesCount)
                let record = try StoredLicense.require(db, id: id, tenant: tenant, vault: vault)
                _ = try record.save(action: "license.users_erased", at: now, in: db)
            }
        }
        // Done before when nothing else was left: the feed was scrubbed in the same transaction.
        if erased > 0 { erased += try ChangeFeed.scrub(customer: customer, licenses: Set(licenseIDs), in: db) }
        return erased
    }

    /// Carries out every recorded erasure again: after a restore (the data may predate
    /// them) or a crash between recording and erasing. Returns how many customers it changed.
    @discardableResult
    public func replayErasures() throws -> Int {
        let entries = try erasures.entries()
        guard !entries.isEmpty else { return 0 }
        return try database.write { db in
            var changed = 0
            for entry in entries where try self.erase(customer: entry.customer, tenant: entry.tenant, at: self.clock.now, in: db) > 0 {
                changed += 1
            }
            return changed
        }
    }

    /// What issuance holds about a customer: the customer, departments, licenses with
    /// their named users, subscriptions and payments, and the audit rows about them.
    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> CustomerExport {
        try Check.nonEmpty(request.customerId, "customer_id")
        let tenant = tenant(call)
        let sections = try await database.read { db -> CustomerExportSections.Output? in
            guard let customer = try self.vault.findCustomer(request.customerId, tenant: tenant, in: db) else { return nil }
            let licenses = try String.fetchAll(db, sql: "SELECT id FROM license WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            let inList = CustomerExportSections.placeholders(licenses.count)
            var sections = CustomerExportSections()
            // Opened with the customer's data key (the stored row holds only the sealed contact).
            sections.add("customer", objects: [[
                "id": customer.id, "name": customer.name, "email": customer.email, "crm_id": customer.crmId,
                "enterprise": customer.enterprise, "created_at": customer.createdAt,
            ]])
            try sections.add("departments", db, sql: "SELECT * FROM department WHERE customer_id = ?", arguments: [request.customerId])
            try sections.add("licenses", db, sql: "SELECT * FROM license WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            try sections.add("named_users", objects: licenses.flatMap { license in
                try self.vault.namedUsers(license: license, customer: customer.id, in: db).map { ["license_id": license, "user": $0] }
            })
            try sections.add("subscriptions", db, sql: "SELECT * FROM subscription WHERE license_id IN (\(inList)) AND tenant_id = ?", arguments: StatementArguments(licenses + [tenant]))
            try sections.add(
                "payments", db,
                sql: "SELECT p.* FROM payment p JOIN subscription s ON s.id = p.subscription_id WHERE s.license_id IN (\(inList)) AND p.tenant_id = ?",
                arguments: StatementArguments(licenses + [tenant]))
            try sections.add(
                "audit_events", db, sql: "SELECT seq, actor, action, target, occurred_at FROM audit_event WHERE target IN (\(CustomerExportSections.placeholders(licenses.count + 1))) AND tenant_id = ? ORDER BY seq",
                arguments: StatementArguments([request.customerId] + licenses + [tenant]))
            return sections.output
        }
        guard let sections else { throw RPCError.notFound("no customer \(request.customerId)") }
        return CustomerExport(service: "issuance", json: sections.json, records: UInt64(sections.records))
    }
}

extension ChangeFeed {
    /// Removes what could name a customer from events already in the feed: personal fields
    /// of events written before the feed stopped carrying them, and named users' pseudonyms.
    static func scrub(customer: String, licenses: Set<String>, in db: Database) throws -> UInt64 {
        var scrubbed: UInt64 = 0
        let rows = try Row.fetchAll(db, sql: "SELECT seq, event FROM change_event")
        for row in rows {
            var event = try ChangeEvent(serializedBytes: Array(row["event"] as Data))
            var changed = false
            switch event.subject {
            case .customer(let person)? where person.id == customer && (!person.name.isEmpty || !person.email.isEmpty || !person.crmId.isEmpty):
                event.subject = .customer(CustomerVault.published(person))
                changed = true
            case .license(var license)? where licenses.contains(license.id) && !license.namedUsers.isEmpty:
                license.namedUsers = []
                event.subject = .license(license)
                changed = true
            default:
                break
            }
            if changed {
                try db.execute(sql: "UPDATE change_event SET event = ? WHERE seq = ?", arguments: [Data(event.serializedBytes()), row["seq"] as Int64])
                scrubbed += 1
            }
        }
        return scrubbed
    }
}
