import Foundation
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The C client (sdk/c) built with its Makefile and its suite run against a stack started
/// and seeded here: as is, under AddressSanitizer with leak detection, and under
/// ThreadSanitizer. Also the example program, built with pkg-config as the SDK page says.
@Suite(.serialized) struct CClientTests {
    @Test func theCClientsSuitePassesPlainUnderASanAndUnderTSan() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Floating", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 3, maxSeats: 1, features: ["render"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"))
        func key(_ role: Role) async throws -> String { try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "\(role)", role: role)).secret }
        let keys = try await admin.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys
        let signing = try #require(keys.first { $0.current } ?? keys.first)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let certificates = "\(stack.folder)/certs"
        for name in ["real", "other"] {
            let (status, output) = try await Stack.run(root.appendingPathComponent("deploy/make-certs").path, ["\(certificates)/\(name)"], absolute: true)
            #expect(status == 0, "\(output)")
        }
        let productKey = try await key(.product)
        let issuerKey = try await key(.issuer)
        let sdk = root.appendingPathComponent("sdk/c").path
        for target in ["test", "asan", "tsan"] {
            // The suite issues (and revokes) its own license; the offline file is for this one.
            let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
            let offline = try await admin.call(ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(licenseKey: issued.licenseKey, fingerprint: "c-fp-offline"))
            let file = "\(stack.folder)/offline-\(target).lic"
            try offline.armored.write(toFile: file, atomically: true, encoding: .utf8)
            let (status, output) = try await Stack.run(
                "/usr/bin/make", ["-s", "-C", sdk, target],
                environment: [
                    "LM_GATEWAY": "unix:\(stack.folder)/run/gateway.sock", "LM_PRODUCT_KEY": productKey, "LM_ISSUER_KEY": issuerKey,
                    "LM_POLICY": policy.id, "LM_CUSTOMER": customer.id, "LM_KID": signing.kid,
                    "LM_PUBLIC_KEY": signing.publicKey.map { String(format: "%02x", $0) }.joined(), "LM_OFFLINE_FILE": file, "LM_CERTS": certificates,
                    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1", "TSAN_OPTIONS": "halt_on_error=1",
                ],
                absolute: true)
            #expect(status == 0 && output.contains("passed: 0 failures"), "make \(target):\n\(output)")
            #expect(!output.contains("ERROR: AddressSanitizer") && !output.contains("WARNING: ThreadSanitizer") && !output.contains("LeakSanitizer"), "make \(target):\n\(output)")
        }
        // The example, built as the SDK page says, against an installed copy.
        let prefix = "\(stack.folder)/prefix"
        let (installed, installOutput) = try await Stack.run("/usr/bin/make", ["-s", "-C", sdk, "install", "PREFIX=\(prefix)"], absolute: true)
        #expect(installed == 0, "\(installOutput)")
        let (built, buildOutput) = try await Stack.run(
            "/bin/sh", ["-c", "cc \(sdk)/example/example.c $(pkg-config --cflags --libs licensing-client) -o \(stack.folder)/example"],
            environment: ["PKG_CONFIG_PATH": "\(prefix)/lib/pkgconfig"], absolute: true)
        #expect(built == 0, "\(buildOutput)")
        let fresh = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let (ran, runOutput) = try await Stack.run(
            "\(stack.folder)/example", [fresh.licenseKey],
            environment: [
                "LD_LIBRARY_PATH": "\(prefix)/lib", "LM_GATEWAY": "unix:\(stack.folder)/run/gateway.sock", "LM_API_KEY": productKey, "LM_KID": signing.kid,
                "LM_PUBLIC_KEY": signing.publicKey.map { String(format: "%02x", $0) }.joined(),
            ],
            absolute: true)
        #expect(ran == 0 && runOutput.contains("valid: license \(fresh.license!.id)") && runOutput.contains("feature render"), "\(runOutput)")
    }
}
