import Foundation
import GRDB
@testable import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Logging
import Testing

/// A database from before personal data was sealed: the v6 migration moves contacts and
/// named users in as they were (marked unsealed), and the service seals them at its next
/// start, takes names out of the feed's history, and starts a new feed epoch so followers
/// read the history again. Nothing of the person is left in clear in the file.
@Suite struct LegacyDataTests {
    @Test func rowsMovedInUnsealedAreSealedAtStart() async throws {
        let folder = TemporaryFolder()
        let service = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, logger: Logger(label: "test"))
        try await withServer(service.router(), in: folder, name: "issuance") { client in
            let (policy, _) = try await seedCatalogue(client, type: .perUser, maxUsers: 3)
            let customer = try await client.call(
                IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Legacy Person", email: "legacy@old.test", crmId: "crm-legacy"))
            let issued = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer.id))
            let license = issued.license!.id
            _ = try await client.call(IssuanceMethods.assignUser, AssignUserRequest(id: license, user: "legacy.user"))

            // What the v6 migration leaves behind for rows written before it.
            try await service.database.write { db in
                try db.execute(
                    sql: "UPDATE customer SET contact = CAST(json_object('name', ?, 'email', ?, 'crm_id', ?) AS BLOB), crm_hash = '' WHERE id = ?",
                    arguments: ["Legacy Person", "legacy@old.test", "crm-legacy", customer.id])
                try db.execute(sql: "DELETE FROM data_key")
                try db.execute(sql: "UPDATE license_user SET user_hash = 'legacy:legacy.user', user = CAST('legacy.user' AS BLOB), pseudonym = ''")
                for row in try Row.fetchAll(db, sql: "SELECT seq, event FROM change_event") {
                    var event = try ChangeEvent(serializedBytes: Array(row["event"] as Data))
                    switch event.subject {
                    case .customer(var person)?:
                        (person.name, person.email, person.crmId) = ("Legacy Person", "legacy@old.test", "crm-legacy")
                        event.subject = .customer(person)
                    case .license(var held)? where !held.namedUsers.isEmpty:
                        held.namedUsers = ["legacy.user"]
                        event.subject = .license(held)
                    default: continue
                    }
                    try db.execute(sql: "UPDATE change_event SET event = ? WHERE seq = ?", arguments: [Data(event.serializedBytes()), row["seq"] as Int64])
                }
            }
            let epochBefore = try await client.call(IssuanceMethods.changes, ChangesRequest()).epoch

            // The start's sealing pass.
            try await service.database.write { db in try service.vault.sealLegacyRows(in: db) }

            let read = try await client.call(IssuanceMethods.getCustomer, GetByIdRequest(id: customer.id))
            #expect(read.name == "Legacy Person" && read.email == "legacy@old.test" && read.crmId == "crm-legacy")
            let found = try await client.call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: "crm-legacy"))
            #expect(found.customers.map(\.id) == [customer.id])
            #expect(try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license)).namedUsers == ["legacy.user"])
            let feed = try await client.call(IssuanceMethods.changes, ChangesRequest(limit: 5000))
            #expect(feed.epoch != epochBefore, "followers must read the rewritten history again")
            for event in feed.events {
                switch event.subject {
                case .customer(let person)?: #expect(person.name.isEmpty && person.email.isEmpty && person.crmId.isEmpty)
                case .license(let held)?: #expect(!held.namedUsers.contains("legacy.user"))
                default: break
                }
            }
            // A second start finds nothing to do.
            try await service.database.write { db in try service.vault.sealLegacyRows(in: db) }
            #expect(try await client.call(IssuanceMethods.changes, ChangesRequest()).epoch == feed.epoch)

            // Nothing of the person in clear in the file (the WAL copied back first).
            _ = try await service.database.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
            let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(folder.path)/issuance.sqlite"))
            for needle in ["Legacy Person", "legacy@old.test", "crm-legacy", "legacy.user"] {
                #expect(bytes.range(of: Data(needle.utf8)) == nil, "\(needle) is in the file in clear")
            }
        }
    }
}
