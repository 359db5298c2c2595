import Foundation
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The Python client's suite (sdk/python/tests) against a stack started and seeded here,
/// with two certificate folders for its TLS test. Debian's python3 with python3-protobuf
/// and python3-cryptography (deploy/install-deps).
@Suite(.serialized) struct PythonClientTests {
    @Test func thePythonClientsSuitePassesAgainstALiveStack() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Floating", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 2, maxSeats: 1, features: ["render"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"))
        func key(_ role: Role) async throws -> String { try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "\(role)", role: role)).secret }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let certificates = "\(stack.folder)/certs"
        for name in ["real", "other"] {
            let (status, output) = try await Stack.run(root.appendingPathComponent("deploy/make-certs").path, ["\(certificates)/\(name)"], absolute: true)
            #expect(status == 0, "\(output)")
        }
        let (status, output) = try await Stack.run(
            "/usr/bin/python3", ["-m", "unittest", "discover", "-v", "-s", root.appendingPathComponent("sdk/python/tests").path],
            environment: [
                "PYTHONPATH": root.appendingPathComponent("sdk/python").path, "LM_GATEWAY": "unix:\(stack.folder)/run/gateway.sock",
                "LM_ISSUER_KEY": try await key(.issuer), "LM_PRODUCT_KEY": try await key(.product), "LM_POLICY": policy.id, "LM_CUSTOMER": customer.id,
                "LM_CERTS": certificates,
            ],
            absolute: true)
        #expect(status == 0, "the Python client's suite failed:\n\(output)")
        #expect(output.contains("Ran 6 tests") && !output.contains("skipped"), "\(output)")
    }
}
