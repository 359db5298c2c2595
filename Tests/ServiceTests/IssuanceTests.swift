import Foundation
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import LicensingTestSupport
import Testing

@Suite struct IssuanceTests {
    func service(_ folder: TemporaryFolder, clock: ManualLicenseClock = ManualLicenseClock()) throws -> IssuanceService {
        try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock, logger: Logger(label: "test"))
    }

    @Test func issueShowAndListALicense() async throws {
        let folder = TemporaryFolder()
        try await withServer(try service(folder).router(), in: folder, name: "issuance") { client in
            let (policy, customer) = try await seedCatalogue(client, duration: 86400 * 30, grace: 86400)
            let issued = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let license = try #require(issued.license)
            #expect(license.state == .active)
            #expect(license.expiresAt == license.issuedAt + 86400 * 30)
            #expect(license.features == ["export"])
            let key = try LicenseKey(parsing: issued.licenseKey)
            #expect(license.keyPrefix == key.prefix)

            let byID = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license.id))
            let byKey = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: issued.licenseKey))
            // The issuing answer also says where in the feed the license is; reads do not.
            #expect(license.feedSeq > 0)
            var stored = license
            stored.feedSeq = 0
            #expect(byID == stored)
            #expect(byKey == stored)

            let listed = try await client.call(IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customer))
            #expect(listed.licenses.map(\.id) == [license.id])
        }
    }

    @Test func theKeyIsStoredOnlyAsAKeyedHash() async throws {
        let folder = TemporaryFolder()
        let issuance = try service(folder)
        let key = try await withServer(issuance.router(), in: folder, name: "issuance") { client in
            let (policy, customer) = try await seedCatalogue(client)
            return try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
        }
        let canonical = try LicenseKey(parsing: key).canonical
        let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(folder.path)/issuance.sqlite"))
            + ((try? Data(contentsOf: URL(fileURLWithPath: "\(folder.path)/issuance.sqlite-wal"))) ?? Data())
        #expect(bytes.range(of: Data(canonical.utf8)) == nil)
        #expect(bytes.range(of: Data(key.utf8)) == nil)
    }

    @Test func badInputGetsClearErrors() async throws {
        let folder = TemporaryFolder()
        try await withServer(try service(folder).router(), in: folder, name: "issuance") { client in
            let failures = [
                await expectCode(.invalidArgument) { _ = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "", code: "X1")) },
                await expectCode(.invalidArgument) { _ = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "A", code: "lower case")) },
                await expectCode(.invalidArgument) { _ = try await client.call(IssuanceMethods.createPolicy, CreatePolicyRequest()) },
                await expectCode(.notFound) {
                    _ = try await client.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: "prod_none", name: "P", licenseType: .perUser)))
                },
                await expectCode(.invalidArgument) {
                    _ = try await client.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: "prod_x", name: "P", licenseType: .perUser, allowedRegions: ["Germany"])))
                },
                await expectCode(.invalidArgument) { _ = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "A", email: "not-an-address")) },
                await expectCode(.invalidArgument) { _ = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest()) },
                await expectCode(.notFound) { _ = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: "pol_none", customerId: "cus_none")) },
                await expectCode(.notFound) { _ = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: "lic_none")) },
                await expectCode(.invalidArgument) { _ = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: "1234")) },
            ]
            for failure in failures.compactMap({ $0 }) { Issue.record(Comment(rawValue: failure)) }

            _ = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "A", code: "DUP"))
            let duplicate = await expectCode(.alreadyExists) { _ = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "B", code: "DUP")) }
            #expect(duplicate == nil, "\(duplicate ?? "")")
        }
    }

    @Test func stateMachineRefusesIllegalTransitions() async throws {
        let folder = TemporaryFolder()
        try await withServer(try service(folder).router(), in: folder, name: "issuance") { client in
            let (policy, customer) = try await seedCatalogue(client)
            let id = try #require(try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).license?.id)
            let notSuspended = await expectCode(.failedPrecondition) { _ = try await client.call(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: id)) }
            #expect(notSuspended == nil, "\(notSuspended ?? "")")
            #expect(try await client.call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: id, reason: "unpaid")).state == .suspended)
            #expect(try await client.call(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: id)).state == .active)
            #expect(try await client.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: id, reason: "fraud")).state == .revoked)
            for method in [IssuanceMethods.reinstateLicense, IssuanceMethods.suspendLicense, IssuanceMethods.revokeLicense] {
                let refused = await expectCode(.failedPrecondition) { _ = try await client.call(method, LicenseTransitionRequest(id: id)) }
                #expect(refused == nil, "\(method.name): \(refused ?? "")")
            }
        }
    }

    @Test func changeFeedHasEveryChangeInOrderAndResumes() async throws {
        let folder = TemporaryFolder()
        try await withServer(try service(folder).router(), in: folder, name: "issuance") { client in
            let (policy, customer) = try await seedCatalogue(client)
            let issued = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let id = try #require(issued.license?.id)
            _ = try await client.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: id))

            let all = try await client.call(IssuanceMethods.changes, ChangesRequest(afterSeq: 0))
            #expect(all.events.map(\.action) == ["product.created", "policy.created", "customer.created", "license.issued", "license.revoked"])
            #expect(all.events.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(all.lastSeq == 5)
            let hash = try LicenseKey(parsing: issued.licenseKey).hash(secret: testSecret)
            #expect(all.events[3].keyHash == hash)
            guard case .license(let revoked)? = all.events[4].subject else {
                Issue.record("event 5 is not about a license: \(all.events[4])")
                return
            }
            #expect(revoked.state == .revoked)

            let rest = try await client.call(IssuanceMethods.changes, ChangesRequest(afterSeq: 3, limit: 1))
            #expect(rest.events.map(\.seq) == [4])

            var watched: [UInt64] = []
            for try await event in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 2)) {
                watched.append(event.seq)
                if watched.count == 3 { break }
            }
            #expect(watched == [3, 4, 5])
        }
    }
}
