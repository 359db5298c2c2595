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
}
