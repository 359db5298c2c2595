import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire

extension ValidationService {
    /// GDPR erasure: machine names and platforms, seat holders' user names, named users
    /// and the validation log of the customer's licenses. Running it again erases nothing more.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        try Check.nonEmpty(request.customerId, "customer_id")
        let tenant = call.metadata[RPCMetadata.tenant]
        let erased = try await database.write { db -> Int in
            let licenses = "SELECT license_id FROM replica_license WHERE customer_id = ? AND (? IS NULL OR tenant_id = ?)"
            var erased = 0
            for sql in [
                "UPDATE machine SET name = '', platform = '' WHERE (name != '' OR platform != '') AND license_id IN (\(licenses))",
                "UPDATE seat_lease SET user = '' WHERE user != '' AND license_id IN (\(licenses))",
                "UPDATE seat_queue SET user = '' WHERE user != '' AND license_id IN (\(licenses))",
                "UPDATE replica_license SET named_users = '' WHERE named_users != '' AND license_id IN (\(licenses))",
                "DELETE FROM validation_log WHERE license_id IN (\(licenses))",
            ] {
                try db.execute(sql: sql, arguments: [request.customerId, tenant, tenant])
                erased += db.changesCount
            }
            return erased
        }
        return EraseCustomerResponse(service: "validation", recordsErased: UInt64(erased), detail: "machine names, seat users, named users and validation log")
    }

    /// What validation holds about a customer's licenses: machines, seats and the
    /// validation log, within the caller's tenant.
    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> CustomerExport {
        try Check.nonEmpty(request.customerId, "customer_id")
        let tenant = call.metadata[RPCMetadata.tenant]
        let sections = try await database.read { db -> CustomerExportSections.Output in
            let licenses = try String.fetchAll(
                db, sql: "SELECT license_id FROM replica_license WHERE customer_id = ? AND (? IS NULL OR tenant_id = ?)",
                arguments: [request.customerId, tenant, tenant])
            let inList = CustomerExportSections.placeholders(licenses.count)
            let arguments = StatementArguments(licenses)
            var sections = CustomerExportSections()
            try sections.add("machines", db, sql: "SELECT * FROM machine WHERE license_id IN (\(inList))", arguments: arguments)
            try sections.add("seats", db, sql: "SELECT * FROM seat_lease WHERE license_id IN (\(inList))", arguments: arguments)
            try sections.add("seat_queue", db, sql: "SELECT * FROM seat_queue WHERE license_id IN (\(inList))", arguments: arguments)
            try sections.add("validations", db, sql: "SELECT * FROM validation_log WHERE license_id IN (\(inList)) ORDER BY rowid DESC", arguments: arguments)
            return sections.output
        }
        return CustomerExport(service: "validation", json: sections.json, records: UInt64(sections.records))
    }
}
