import Foundation
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// GDPR right of access: one customer whose data is in every service, exported through the
/// gateway's fan-out as one JSON document; nothing of another customer or tenant, no
/// secrets, and another tenant's admin cannot export them.
@Suite(.serialized) struct ExportCustomerTests {
    @Test func aCustomersDataFromEveryServiceInOneDocument() async throws {
        let stack = try Stack()
        // Webhook endpoints on this machine (a closed port): deliveries fail, and are logged.
        stack.environment["integrations"] = ["LM_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"]
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        _ = try await admin.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: "http://127.0.0.1:9/hooks"))
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Seats", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 3, maxSeats: 2, features: ["render"])))
        let dana = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Dana Scully", email: "dana@bureau.test"))
        let other = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Fox Mulder", email: "fox@bureau.test"))
        let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: dana.id))
        let others = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: other.id))
        let license = issued.license!.id
        _ = try await admin.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "dana-fp", machineName: "Dana's laptop"))
        _ = try await admin.call(ValidationMethods.activate, ActivateRequest(licenseKey: others.licenseKey, fingerprint: "fox-fp", machineName: "Fox's desktop"))
        _ = try await admin.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: issued.licenseKey, clientId: "dana-proc", user: "dana"))
        _ = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, fingerprint: "dana-fp"))
        _ = try await admin.call(UsageMethods.recordUsage, RecordUsageRequest(events: [
            UsageEvent(eventId: "dana-1", licenseKey: issued.licenseKey, feature: "render", quantity: 7, occurredAt: Int64(Date().timeIntervalSince1970), user: "dana"),
        ]))
        _ = try await admin.call(UsageMethods.reportTamper, TamperReport(licenseKey: issued.licenseKey, kind: "clock-rollback", detail: "clock set back"))

        // Every follower has what it follows once the document names it everywhere.
        var document: [String: Any] = [:]
        var services: [String: Any] = [:]
        func section(_ service: String, _ name: String) -> [[String: Any]] { ((services[service] as? [String: Any])?[name] as? [[String: Any]]) ?? [] }
        let complete = await eventually(within: .seconds(30), every: .milliseconds(300)) {
            guard let answer = try? await admin.call(GatewayMethods.exportCustomer, ExportCustomerRequest(customerId: dana.id), timeout: .seconds(30)),
                let parsed = try? JSONSerialization.jsonObject(with: Data(answer.json)) as? [String: Any]
            else { return false }
            document = parsed
            services = (parsed["services"] as? [String: Any]) ?? [:]
            return !section("reporting", "licenses").isEmpty && !section("integrations", "webhook_events").isEmpty && !section("usage", "alerts").isEmpty
                && !section("validation", "validations").isEmpty
        }
        #expect(complete, "\(document)")
        #expect(document["customer_id"] as? String == dana.id && (document["missing"] as? [String])?.isEmpty == true)
        #expect(section("issuance", "customer").first?["name"] as? String == "Dana Scully")
        #expect(section("issuance", "customer").first?["email"] as? String == "dana@bureau.test")
        #expect(section("issuance", "licenses").map { $0["id"] as? String } == [license])
        #expect(section("validation", "machines").first?["name"] as? String == "Dana's laptop" && section("validation", "machines").count == 1)
        #expect(section("validation", "seats").count == 1)
        #expect(section("usage", "usage_events").first?["quantity"] as? Int == 7)
        #expect(section("reporting", "licenses").map { $0["id"] as? String } == [license])
        #expect(section("integrations", "webhook_events").allSatisfy { $0["customer_id"] as? String == dana.id })
        // Nothing of the other customer, nothing secret.
        let text = String(decoding: try JSONSerialization.data(withJSONObject: document), as: UTF8.self)
        #expect(!text.contains(others.license!.id) && !text.contains("Fox") && !text.contains("fox-fp"))
        #expect(!text.contains("key_hash") && !text.contains(issued.licenseKey) && !text.contains("secret"))

        // licensectl writes it to a file only its owner reads.
        let file = "\(stack.folder)/dana.json"
        let (status, output) = try await stack.ctl(["export-customer", dana.id, "--out", file])
        #expect(status == 0, "\(output)")
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try String(contentsOfFile: file, encoding: .utf8).contains("Dana Scully"))

        // Another tenant's admin: as if the customer did not exist.
        let acme = try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "acme admin", tenantId: "acme", role: .admin)).secret
        let acmeClient = stack.gatewayClient(apiKey: acme)
        await #expect(throws: RPCError.self) { _ = try await acmeClient.call(GatewayMethods.exportCustomer, ExportCustomerRequest(customerId: dana.id)) }
        await acmeClient.close()
        // Support may not export personal data; only admins.
        let support = stack.gatewayClient(apiKey: try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "support", role: .support)).secret)
        do {
            _ = try await support.call(GatewayMethods.exportCustomer, ExportCustomerRequest(customerId: dana.id))
            Issue.record("support exported a customer")
        } catch let error as RPCError {
            #expect(error.code == .permissionDenied)
        }
        await support.close()
    }
}
