import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Testing

/// The slice through all five executables, driven through the gateway.
@Suite(.serialized) struct SliceTests {
    @Test func issueValidateRevokeExpireAndSurviveIssuanceOutage() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = RPCClient(endpoint: stack.endpoint("gateway"))
        defer { Task { await gateway.close() } }

        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "CAD Pro", code: "CADPRO"))
        let policy = try await gateway.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(productId: product.id, name: "Yearly", licenseType: .perDevice, durationSeconds: 365 * 86400, features: ["export"])))
        let shortPolicy = try await gateway.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(productId: product.id, name: "Two seconds", licenseType: .perDevice, durationSeconds: 2)))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme", email: "ops@acme.test"))
        let kept = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let revoked = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let expiring = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: shortPolicy.id, customerId: customer.id))

        func validate(_ key: String) async throws -> ValidateResponse {
            try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: key))
        }
        /// Polls until the answer is `reason`; returns how long that took.
        func waitFor(_ key: String, _ reason: ReasonCode, within limit: Duration) async throws -> Duration {
            let start = ContinuousClock.now
            while ContinuousClock.now - start < limit {
                if try await validate(key).reason == reason { return ContinuousClock.now - start }
                try await Task.sleep(for: .milliseconds(20))
            }
            Issue.record("validate did not answer \(reason) within \(limit); last: \(try await validate(key).reason)")
            return limit
        }

        _ = try await waitFor(kept.licenseKey, .valid, within: .seconds(3))
        #expect(try await validate(kept.licenseKey).valid)
        #expect(try await validate(LicenseKey.generate().description).reason == .notFound)

        _ = try await gateway.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: revoked.license!.id, reason: "chargeback"))
        let revokedAfter = try await waitFor(revoked.licenseKey, .revoked, within: .seconds(3))
        #expect(revokedAfter < .seconds(1), "REVOKED took \(revokedAfter)")

        _ = try await waitFor(expiring.licenseKey, .expired, within: .seconds(5))

        // Issuance down: validation answers from its replica; routed issuance calls fail fast.
        #expect(stack.stop("issuance") == 0)
        #expect(try await validate(kept.licenseKey).reason == .valid)
        #expect(try await validate(revoked.licenseKey).reason == .revoked)
        await #expect(throws: RPCError.self) {
            _ = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(id: kept.license!.id), timeout: .seconds(3))
        }
        let health = try await gateway.call(GatewayMethods.health, HealthCheckRequest())
        #expect(health.components.first { $0.name == "issuance" }?.code == .unavailable)
        #expect(health.components.first { $0.name == "validation" }?.code == .ok)

        // Issuance back: validation catches up with what happened meanwhile... and nothing was lost.
        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        let again = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(id: kept.license!.id))
        #expect(again.state == .active)
        let late = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        _ = try await waitFor(late.licenseKey, .valid, within: .seconds(5))
    }

    @Test func sigtermUnderLoadLosesNoAcknowledgedWrite() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let issuance = RPCClient(endpoint: stack.endpoint("issuance"), configuration: .init(connections: 4))
        let product = try await issuance.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Load", code: "LOAD"))
        let policy = try await issuance.call(
            IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: .perUser)))
        let customer = try await issuance.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Load Co"))

        let acknowledged = try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<16 {
                group.addTask {
                    var ids: [String] = []
                    while true {
                        do {
                            let issued = try await issuance.call(
                                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id), timeout: .seconds(5))
                            ids.append(issued.license!.id)
                        } catch {
                            return ids
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(800))
            #expect(stack.stop("issuance") == 0, "issuance did not exit 0 on SIGTERM: \(stack.log("issuance"))")
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
        await issuance.close()
        #expect(acknowledged.count > 10)

        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        let reopened = RPCClient(endpoint: stack.endpoint("issuance"))
        var missing: [String] = []
        for id in acknowledged {
            if (try? await reopened.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id))) == nil { missing.append(id) }
        }
        await reopened.close()
        #expect(missing.isEmpty, "acknowledged but lost: \(missing)")
    }

    @Test func licensectlWalkThrough() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = "unix:\(stack.folder)/run/gateway.sock"

        func ctl(_ arguments: [String]) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = Stack.binaries.appendingPathComponent("licensectl")
            process.arguments = arguments + ["--gateway", gateway]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, output)
        }
        func json(_ arguments: [String]) throws -> [String: Any] {
            let (status, output) = try ctl(arguments + ["--json"])
            #expect(status == 0, "\(arguments): \(output)")
            return (try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]) ?? [:]
        }

        let product = try json(["product", "create", "--name", "CAD Pro", "--code", "CADPRO"])["id"] as! String
        let policy = try json(["policy", "create", "--product", product, "--name", "Standard", "--duration", "365d", "--features", "export,render"])["id"] as! String
        let customer = try json(["customer", "create", "--name", "Acme"])["id"] as! String
        let issued = try json(["license", "issue", "--policy", policy, "--customer", customer])
        let key = issued["license_key"] as! String
        let license = (issued["license"] as! [String: Any])["id"] as! String

        var status: Int32 = -1
        for _ in 0..<100 where status != 0 {
            status = try ctl(["validate", key, "--feature", "render"]).0
            if status != 0 { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(status == 0)
        #expect(try ctl(["validate", key, "--feature", "fly"]).0 == 1)
        #expect(try ctl(["validate", "not-a-key"]).0 == 1)
        #expect(try ctl(["license", "show", license]).1.contains("ACTIVE"))
        #expect(try ctl(["license", "revoke", license]).0 == 0)
        try await Task.sleep(for: .seconds(1))
        let (revokedStatus, revokedOutput) = try ctl(["validate", key])
        #expect(revokedStatus == 1)
        #expect(revokedOutput.contains("REVOKED"))
        #expect(try ctl(["license", "show", "lic_nothing"]).0 == 2)
        #expect(try ctl(["validate"]).0 == 2)
        #expect(try ctl(["health"]).0 == 0)
    }
}
