import Foundation
import LicensingRPC
import LicensingWire
import Testing

/// A vendor leaving another system: `licensectl import` brings customers and licenses with
/// the keys their holders already have; a dry run changes nothing; a second run creates
/// nothing twice; imported keys validate, activate and sign in like native ones.
@Suite(.serialized) struct ImportTests {
    @Test func importingFromJSONLinesAndCSVKeepsTheOldKeysWorking() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        _ = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 2, features: ["render"])))
        let file = "\(stack.folder)/import.jsonl"
        let lines = [
            #"{"type":"customer","ref":"OLD-1","name":"Acme Films","email":"it@acme.test"}"#,
            #"{"type":"customer","ref":"OLD-2","name":"Beta Post"}"#,
            #"{"type":"license","customer":"OLD-1","policy":"Standard","key":"ACME-7781-QQ2P-0042","expires":"2030-01-31","machines":[{"fingerprint":"old-fp-1","name":"Edit bay"}]}"#,
            #"{"type":"license","customer":"OLD-2","policy":"standard","key":"betapost 55 91 xk"}"#,
            #"{"type":"license","customer":"OLD-2","policy":"Enterprise","key":"BETA-0000-0001"}"#,
            #"{"type":"license","customer":"OLD-9","policy":"Standard","key":"NOBODY-00001"}"#,
            #"{"type":"license","customer":"OLD-1","policy":"Standard","key":"no"}"#,
            "not json",
        ]
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)

        // The dry run: what would be created, every row it cannot take with the reason; nothing changes.
        var (status, output) = try await stack.ctl(["import", file, "--dry-run"])
        #expect(status == 1, "\(output)")
        #expect(output.contains("would create 2 customers, 2 licenses, 1 machine activations"), "\(output)")
        #expect(output.contains("line 5: no policy is named \"Enterprise\""), "\(output)")
        #expect(output.contains("line 6: customer OLD-9 is not in the file"), "\(output)")
        #expect(output.contains("line 7: key: an imported key has 12 to 64 letters and digits"), "\(output)")
        #expect(output.contains("line 8: not a JSON object"), "\(output)")
        #expect(try await admin.call(IssuanceMethods.listCustomers, ListCustomersRequest()).customers.isEmpty)

        (status, output) = try await stack.ctl(["import", file])
        #expect(status == 1, "\(output)")
        #expect(output.contains("created 2 customers, 2 licenses, 1 machine activations; 0 licenses already imported"), "\(output)")
        // The old keys work as their holders type them.
        let validated = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: "acme-7781-qq2p-0042", fingerprint: "old-fp-1"))
        #expect(validated.reason == .valid && validated.features == ["render"], "\(validated)")
        let license = try await admin.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: "ACME7781QQ2P0042"))
        #expect(license.keyPrefix == "ACME7" && license.expiresAt == 1_896_048_000)
        let activated = try await admin.call(ValidationMethods.activate, ActivateRequest(licenseKey: "BETAPOST5591XK", fingerprint: "new-fp"))
        #expect(activated.reason == .valid)
        // A key that is not imported is not found at once; a mistyped native key keeps its own error.
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: "ACME-7781-QQ2P-0043")).reason == .notFound)
        let mistyped = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: "1583-WBTW-4CM1-CBZS-52ZX-5DBW-SZCY"))
        #expect(mistyped.reason == .malformedKey)
        // The key text itself is in no file the services wrote.
        for name in try FileManager.default.contentsOfDirectory(atPath: stack.folder) where name.contains(".sqlite") {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(stack.folder)/\(name)"))
            #expect(bytes.range(of: Data("ACME7781QQ2P0042".utf8)) == nil && bytes.range(of: Data("ACME-7781-QQ2P-0042".utf8)) == nil, "\(name) holds an imported key")
        }

        // Again: nothing twice.
        (status, output) = try await stack.ctl(["import", file])
        #expect(output.contains("created 0 customers, 0 licenses, 1 machine activations; 2 licenses already imported"), "\(output)")
        #expect(try await admin.call(IssuanceMethods.listCustomers, ListCustomersRequest()).customers.count == 2)

        // CSV, with a quoted name holding a comma; a key another license already has is skipped.
        let csv = "\(stack.folder)/import.csv"
        try """
            customer_ref,customer_name,customer_email,policy,product,key,expires,machines
            OLD-3,"Gamma, Inc.",ops@gamma.test,Standard,STU,GAMMA-1111-2222,2031-06-30,g-fp-1:Render node;g-fp-2
            OLD-1,Acme Films,it@acme.test,Standard,STU,ACME-7781-QQ2P-0042,,
            """.write(toFile: csv, atomically: true, encoding: .utf8)
        (status, output) = try await stack.ctl(["import", csv])
        #expect(status == 0, "\(output)")
        #expect(output.contains("created 1 customers, 1 licenses, 2 machine activations; 1 licenses already imported"), "\(output)")
        let gamma = try await admin.call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: "OLD-3")).customers
        #expect(gamma.first?.name == "Gamma, Inc.")

        // Holders sign in to the console with the key they already have.
        let console = try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "console", role: .console)).secret
        let signIn = stack.gatewayClient(apiKey: console)
        let holder = try await signIn.call(GatewayMethods.signInHolder, SignInHolderRequest(licenseKey: "gamma 1111 2222"))
        #expect(holder.licenseId == (try await admin.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: "GAMMA11112222")).id))
        await signIn.close()
    }
}
