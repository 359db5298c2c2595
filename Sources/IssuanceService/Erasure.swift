import Foundation
import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire

extension IssuanceService {
    /// GDPR erasure of a customer's personal data: name, e-mail, CRM id and the named users
    /// of its licenses, here and in the change feed's history. Licenses themselves stay
    /// (they are the vendor's contract records). Running it again erases nothing more.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        try Check.nonEmpty(request.customerId, "customer_id")
        return try await mutate(call, action: "customer.erase", target: { _ in request.customerId }) { db, context in
            guard let customer = try Tables.customers.find(request.customerId, tenant: context.tenant, in: db) else {
                throw RPCError.notFound("no customer \(request.customerId)")
            }
            var erased: UInt64 = 0
            if customer.name != Self.erasedName || !customer.email.isEmpty || !customer.crmId.isEmpty {
                try db.execute(sql: "UPDATE customer SET name = ?, email = '', crm_id = '' WHERE id = ?", arguments: [Self.erasedName, customer.id])
                erased += 1
            }
            let licenseIDs = try String.fetchAll(db, sql: "SELECT id FROM license WHERE customer_id = ?", arguments: [customer.id])
            for id in licenseIDs {
                // An unrevealed purchased key goes too: its link was sent to the erased address.
                try db.execute(sql: "DELETE FROM sealed_key WHERE license_id = ?", arguments: [id])
                erased += UInt64(db.changesCount)
                try db.execute(sql: "DELETE FROM license_user WHERE license_id = ?", arguments: [id])
                if db.changesCount > 0 {
                    erased += UInt64(db.changesCount)
                    let record = try LicenseRecord.require(db, id: id, tenant: context.tenant)
                    _ = try record.save(action: "license.users_erased", at: context.now, in: db)
                }
            }
            erased += try ChangeFeed.scrub(customer: customer.id, licenses: Set(licenseIDs), erasedName: Self.erasedName, in: db)
            return EraseCustomerResponse(service: "issuance", recordsErased: erased, detail: "customer \(customer.id): name, e-mail, CRM id and named users erased")
        }
    }

    static let erasedName = "(erased)"

    /// What issuance holds about a customer: the customer, departments, licenses with
    /// their named users, subscriptions and payments, and the audit rows about them.
    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> CustomerExport {
        try Check.nonEmpty(request.customerId, "customer_id")
        let tenant = tenant(call)
        let sections = try await database.read { db -> CustomerExportSections.Output? in
            guard try Tables.customers.find(request.customerId, tenant: tenant, in: db) != nil else { return nil }
            let licenses = try String.fetchAll(db, sql: "SELECT id FROM license WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            let inList = CustomerExportSections.placeholders(licenses.count)
            var sections = CustomerExportSections()
            try sections.add("customer", db, sql: "SELECT * FROM customer WHERE id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            try sections.add("departments", db, sql: "SELECT * FROM department WHERE customer_id = ?", arguments: [request.customerId])
            try sections.add("licenses", db, sql: "SELECT * FROM license WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            try sections.add("named_users", db, sql: "SELECT * FROM license_user WHERE license_id IN (\(inList))", arguments: StatementArguments(licenses))
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
    /// Removes a customer's personal data from events already in the feed.
    static func scrub(customer: String, licenses: Set<String>, erasedName: String, in db: Database) throws -> UInt64 {
        var scrubbed: UInt64 = 0
        let rows = try Row.fetchAll(db, sql: "SELECT seq, event FROM change_event")
        for row in rows {
            var event = try ChangeEvent(serializedBytes: Array(row["event"] as Data))
            var changed = false
            switch event.subject {
            case .customer(var person)? where person.id == customer && (person.name != erasedName || !person.email.isEmpty || !person.crmId.isEmpty):
                person.name = erasedName
                person.email = ""
                person.crmId = ""
                event.subject = .customer(person)
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
