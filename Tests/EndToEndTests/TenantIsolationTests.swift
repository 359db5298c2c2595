import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Testing

/// Two tenants on one stack: a tenant's admin reaches nothing of the other's, cannot tell
/// the other's ids from ids that do not exist, and cannot touch what every tenant shares.
@Suite(.serialized) struct TenantIsolationTests {
    struct Answer: Equatable {
        let code: StatusCode
        let message: String
    }

    /// Calls a method with an encoded request; the status, with `id` in the message made
    /// generic, and the answer's bytes.
    static func answer(_ client: RPCClient, _ method: String, _ payload: [UInt8], id: String) async -> (Answer, [UInt8]) {
        do {
            let bytes = try await client.callRaw(method, payload: payload, metadata: [:], deadline: .now + .seconds(15))
            // The server's clock is not part of what is compared: two calls may straddle a second.
            if method == ValidationMethods.validate.name, var response = try? ValidateResponse(serializedBytes: bytes) {
                response.serverTime = 0
                return (Answer(code: .ok, message: ""), response.serializedBytes())
            }
            return (Answer(code: .ok, message: ""), bytes)
        } catch let error as RPCError {
            return (Answer(code: error.code, message: error.message.replacingOccurrences(of: id, with: "<id>")), [])
        } catch {
            return (Answer(code: .unknown, message: "\(error)"), [])
        }
    }

    static func client(_ stack: Stack, _ secret: String) -> RPCClient {
        RPCClient(endpoint: stack.endpoint("gateway"), configuration: RPCClientConfiguration(connections: 1, metadata: [RPCMetadata.apiKey: secret]))
    }

    @Test func aTenantAdminReachesNothingOfAnotherTenant() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let operatorClient = stack.gatewayClient()
        defer { Task { await operatorClient.close() } }
        func key(_ tenant: String, _ role: Role) async throws -> String {
            try await operatorClient.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "\(tenant) \(role)", tenantId: tenant, role: role)).secret
        }
        let acme = Self.client(stack, try await key("acme", .admin))
        let acmeProduct = Self.client(stack, try await key("acme", .product))
        let globex = Self.client(stack, try await key("globex", .admin))
        let globexAuditor = Self.client(stack, try await key("globex", .auditor))
        defer { for client in [acme, acmeProduct, globex, globexAuditor] { Task { await client.close() } } }

        // Tenant acme's world.
        let product = try await acme.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Acme Secret Product", code: "ACMESECRET"))
        let policy = try await acme.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Acme Policy", licenseType: .enterprise, durationSeconds: 86_400 * 30, maxMachines: 3, maxSeats: 2)))
        let customer = try await acme.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme Customer", email: "buyer@acme.test", enterprise: true))
        let department = try await acme.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: customer.id, name: "Acme R&D"))
        let issued = try await acme.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let license = try #require(issued.license)
        #expect(try await acmeProduct.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "acme-box")).reason == .valid)
        _ = try await acmeProduct.call(UsageMethods.recordUsage, RecordUsageRequest(events: [
            UsageEvent(eventId: "acme-1", licenseId: license.id, feature: "render", quantity: 7)]))
        let otherKey = LicenseKey.generate().description

        // Every method that takes an id: acme's id and an id that does not exist get the same answer.
        func same(_ method: String, _ real: String, _ fake: String, _ payload: (String) -> [UInt8]) async {
            let (forReal, realBytes) = await Self.answer(globex, method, payload(real), id: real)
            let (forFake, fakeBytes) = await Self.answer(globex, method, payload(fake), id: fake)
            #expect(forReal == forFake, "\(method) tells acme's id from a missing one: \(forReal) vs \(forFake)")
            // An answer with a reason code (NOT_FOUND inside an OK) must not differ either.
            let realText = String(decoding: realBytes, as: UTF8.self).replacingOccurrences(of: real, with: "<id>")
            let fakeText = String(decoding: fakeBytes, as: UTF8.self).replacingOccurrences(of: fake, with: "<id>")
            #expect(realText == fakeText, "\(method) answers acme's id differently from a missing one")
        }
        func fake(_ id: String) -> String { String(id.dropLast(6)) + "ZZZZZZ" }
        let byId: [(String, String, (String) -> [UInt8])] = [
            (IssuanceMethods.getProduct.name, product.id, { GetByIdRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.updateProduct.name, product.id, { UpdateProductRequest(id: $0, name: "Mine now").serializedBytes() }),
            (IssuanceMethods.createPolicy.name, product.id, { CreatePolicyRequest(policy: Policy(productId: $0, name: "x")).serializedBytes() }),
            (IssuanceMethods.getPolicy.name, policy.id, { GetByIdRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.updatePolicy.name, policy.id, { UpdatePolicyRequest(policy: Policy(id: $0, name: "x")).serializedBytes() }),
            (IssuanceMethods.listPolicies.name, product.id, { ListPoliciesRequest(productId: $0).serializedBytes() }),
            (IssuanceMethods.getCustomer.name, customer.id, { GetByIdRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.updateCustomer.name, customer.id, { UpdateCustomerRequest(id: $0, name: "x").serializedBytes() }),
            (IssuanceMethods.createDepartment.name, customer.id, { CreateDepartmentRequest(customerId: $0, name: "x").serializedBytes() }),
            (IssuanceMethods.listDepartments.name, customer.id, { GetByIdRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.issueLicense.name, policy.id, { IssueLicenseRequest(policyId: $0, customerId: customer.id).serializedBytes() }),
            (IssuanceMethods.getLicense.name, license.id, { GetLicenseRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.getLicense.name, issued.licenseKey, { GetLicenseRequest(licenseKey: $0).serializedBytes() }),
            (IssuanceMethods.suspendLicense.name, license.id, { LicenseTransitionRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.reinstateLicense.name, license.id, { LicenseTransitionRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.revokeLicense.name, license.id, { LicenseTransitionRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.renewLicense.name, license.id, { RenewLicenseRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.changeEntitlements.name, license.id, { ChangeEntitlementsRequest(id: $0, maxMachines: 9).serializedBytes() }),
            (IssuanceMethods.transferLicense.name, license.id, { TransferLicenseRequest(id: $0, toCustomerId: customer.id).serializedBytes() }),
            (IssuanceMethods.assignUser.name, license.id, { AssignUserRequest(id: $0, user: "mallory").serializedBytes() }),
            (IssuanceMethods.unassignUser.name, license.id, { AssignUserRequest(id: $0, user: "mallory").serializedBytes() }),
            (IssuanceMethods.getSubscription.name, license.id, { GetByIdRequest(id: $0).serializedBytes() }),
            (IssuanceMethods.issueCertificate.name, license.id, { IssueCertificateRequest(licenseId: $0, fingerprint: "x").serializedBytes() }),
            (ValidationMethods.listMachines.name, license.id, { ListMachinesRequest(licenseId: $0).serializedBytes() }),
            (ValidationMethods.listSeats.name, license.id, { ListSeatsRequest(licenseId: $0).serializedBytes() }),
            (ValidationMethods.validate.name, issued.licenseKey, { ValidateRequest(licenseKey: $0, fingerprint: "acme-box").serializedBytes() }),
            (ValidationMethods.activate.name, issued.licenseKey, { ActivateRequest(licenseKey: $0, fingerprint: "globex-box").serializedBytes() }),
            (ValidationMethods.deactivate.name, issued.licenseKey, { DeactivateRequest(licenseKey: $0, fingerprint: "acme-box").serializedBytes() }),
            (ValidationMethods.checkoutSeat.name, issued.licenseKey, { CheckoutSeatRequest(licenseKey: $0, clientId: "globex").serializedBytes() }),
            (ValidationMethods.createOfflineLicense.name, issued.licenseKey, { CreateOfflineLicenseRequest(licenseKey: $0, fingerprint: "x").serializedBytes() }),
            (UsageMethods.getUsage.name, license.id, { GetUsageRequest(licenseId: $0).serializedBytes() }),
            (GatewayMethods.licenseOverview.name, license.id, { GetByIdRequest(id: $0).serializedBytes() }),
            (GatewayMethods.eraseCustomer.name, customer.id, { EraseCustomerRequest(customerId: $0).serializedBytes() }),
        ]
        for (method, real, payload) in byId {
            await same(method, real, real == issued.licenseKey ? otherKey : fake(real), payload)
        }

        // Nothing globex lists or reads names anything of acme's.
        let acmeMarks = [product.id, policy.id, customer.id, department.id, license.id, "Acme Secret Product", "Acme Customer", "buyer@acme.test", "acme-1"]
        let listings: [(String, [UInt8])] = [
            (IssuanceMethods.listProducts.name, ListProductsRequest().serializedBytes()),
            (IssuanceMethods.listPolicies.name, ListPoliciesRequest().serializedBytes()),
            (IssuanceMethods.listCustomers.name, ListCustomersRequest().serializedBytes()),
            (IssuanceMethods.listLicenses.name, ListLicensesRequest().serializedBytes()),
            (IssuanceMethods.listAuditEvents.name, ListAuditEventsRequest().serializedBytes()),
            (GatewayMethods.listApiKeys.name, ListApiKeysRequest().serializedBytes()),
            (GatewayMethods.listApiKeys.name, ListApiKeysRequest(tenantId: "acme").serializedBytes()),
            (UsageMethods.getUsage.name, GetUsageRequest(licenseId: license.id).serializedBytes()),
            (ValidationMethods.listMachines.name, ListMachinesRequest(licenseId: license.id).serializedBytes()),
        ]
        for client in [globex, globexAuditor] {
            for (method, payload) in listings {
                let (answer, bytes) = await Self.answer(client, method, payload, id: "-")
                let text = String(decoding: bytes, as: UTF8.self) + answer.message
                for mark in acmeMarks where mark != license.id || !(method.hasSuffix("GetUsage") || method.hasSuffix("ListMachines")) {
                    #expect(!text.contains(mark), "\(method) shows globex acme's \(mark)")
                }
            }
        }
        // Usage acme recorded is acme's: globex cannot record against acme's license (by id or
        // key it is refused like one that does not exist), and acme's sum is unchanged.
        let acmeUsage = try await acme.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.id))
        #expect(acmeUsage.features.map(\.quantity) == [7])
        await same(UsageMethods.recordUsage.name, license.id, fake(license.id)) {
            RecordUsageRequest(events: [UsageEvent(eventId: "acme-1", licenseId: $0, feature: "render", quantity: 1000)]).serializedBytes()
        }
        await same(UsageMethods.recordUsage.name, issued.licenseKey, otherKey) {
            RecordUsageRequest(events: [UsageEvent(eventId: "acme-2", licenseKey: $0, feature: "render", quantity: 1000)]).serializedBytes()
        }
        #expect(try await acme.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.id)).features.map(\.quantity) == [7])

        // What every tenant shares is the operator's: signing keys, the audit chain, the feeds.
        let shared: [(String, [UInt8])] = [
            (IssuanceMethods.rotateSigningKey.name, CreateSigningKeyRequest().serializedBytes()),
            (IssuanceMethods.createSigningKey.name, CreateSigningKeyRequest().serializedBytes()),
            (IssuanceMethods.retireSigningKey.name, GetByIdRequest(id: "any").serializedBytes()),
            (IssuanceMethods.verifyAuditChain.name, VerifyAuditChainRequest().serializedBytes()),
            (IssuanceMethods.changes.name, ChangesRequest().serializedBytes()),
            (UsageMethods.feed.name, FeedRequest().serializedBytes()),
            (ValidationMethods.events.name, FeedRequest().serializedBytes()),
            (ValidationMethods.eraseCustomer.name, EraseCustomerRequest(customerId: customer.id).serializedBytes()),
        ]
        for (method, payload) in shared {
            for client in [globex, acme] {
                #expect(await Self.answer(client, method, payload, id: "-").0.code == .permissionDenied, "\(method) for a tenant admin")
            }
        }
        // Even the operator gets no feed through the gateway: it carries sealed signing keys.
        #expect(await Self.answer(operatorClient, IssuanceMethods.changes.name, ChangesRequest().serializedBytes(), id: "-").0.code == .permissionDenied)
        let rotated = await Self.answer(operatorClient, IssuanceMethods.rotateSigningKey.name, CreateSigningKeyRequest().serializedBytes(), id: "-")
        #expect(rotated.0.code == .ok)

        // The tenant admin still runs its own tenant, audit log included.
        let own = try await acme.call(IssuanceMethods.listAuditEvents, ListAuditEventsRequest())
        #expect(own.events.contains { $0.target == license.id })
        let theirs = try await globex.call(IssuanceMethods.listAuditEvents, ListAuditEventsRequest())
        #expect(!theirs.events.contains { $0.target == license.id })
    }
}
