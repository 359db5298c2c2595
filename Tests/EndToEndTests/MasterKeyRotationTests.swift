import Crypto
import Foundation
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingTestSupport
import LicensingWire
import Testing

/// Master-key rotation on a live stack: a new version is added to the key file, the
/// services seal every value again under it while they serve, and the old version is
/// retired only when no stored value and no kept backup needs it. After a restart with the
/// old version gone, everything sealed still opens.
@Suite(.serialized) struct MasterKeyRotationTests {
    @Test func aNewVersionSealsEverythingAndTheOldOneIsRetiredWhenNothingNeedsIt() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let keyFile = "\(stack.folder)/secrets/master-key"
        let first = MasterKey.versionID(of: try Secrets.parseVersions(String(contentsOfFile: keyFile, encoding: .utf8)).last!)

        // Something of every sealed kind: a customer's data key, a stored answer, signing keys.
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .enterprise, durationSeconds: 365 * 86400, features: ["render"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Rotated Co", email: "keys@rotated.test"))
        let issued = try await admin.call(
            IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id),
            metadata: [RPCMetadata.idempotencyKey: "order-1"])
        let backups = "\(stack.folder)/backups"
        var (status, output) = try await stack.ctl(["backup", "--to", "\(backups)/before", "--master-key", keyFile, "--services", "issuance"])
        #expect(status == 0, "\(output)")

        (status, output) = try await stack.ctl(["master-key", "status", "--backups", backups])
        #expect(status == 0 && output.contains("issuance  current \(first)") && output.contains("validation  current \(first)"), "\(output)")
        #expect(output.contains("backup \(backups)/before needs \(first)"), "\(output)")

        // Deployed, the key file is readable by the services' group: adding keeps that.
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: keyFile)
        (status, output) = try await Stack.run("licensectl", ["master-key", "add", "--key-file", keyFile])
        #expect(status == 0 && output.contains("added master key version"), "\(output)")
        let versions = try Secrets.parseVersions(String(contentsOfFile: keyFile, encoding: .utf8)).map(MasterKey.versionID(of:))
        #expect(versions.count == 2 && versions.first == first)
        let second = versions.last!
        let mode = try FileManager.default.attributesOfItem(atPath: keyFile)[.posixPermissions] as? Int
        #expect(mode == 0o640)

        // Not before the values are sealed again.
        (status, output) = try await stack.ctl(["master-key", "retire", first, "--key-file", keyFile])
        #expect(status == 1 && output.contains("values sealed with \(first) remain") && output.contains("master-key rotate"), "\(output)")

        // Rotation while a client keeps validating (at a pace under the per-key rate limit).
        let load = Task {
            var failures: [String] = []
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                do {
                    let answer = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey))
                    if !answer.valid { failures.append("\(answer.reason)") }
                } catch let error as RPCError where error.code == .cancelled {
                    break  // the test stopped the load
                } catch {
                    failures.append("\(error)")
                }
            }
            return failures
        }
        (status, output) = try await stack.ctl(["master-key", "rotate"])
        #expect(status == 0 && output.contains("issuance  current \(second)") && output.contains("validation  current \(second)"), "\(output)")
        #expect(output.contains("re-sealed") && !output.contains("\(first):"), "\(output)")
        load.cancel()
        let failures = await load.value
        #expect(failures.isEmpty, "\(failures.count) validations failed during the rotation: \(failures.prefix(3))")

        // A kept backup still needs the old version: it stays.
        (status, output) = try await stack.ctl(["master-key", "retire", first, "--key-file", keyFile, "--backups", backups])
        #expect(status == 1 && output.contains("kept backup(s) were made with \(first)"), "\(output)")
        #expect(try Secrets.parseVersions(String(contentsOfFile: keyFile, encoding: .utf8)).count == 2)
        (status, output) = try await stack.ctl(["master-key", "retire", second, "--key-file", keyFile])
        #expect(status != 0 && output.contains("newest version"), "\(output)")
        // Once the retention has removed that backup, it goes.
        try FileManager.default.removeItem(atPath: "\(backups)/before")
        (status, output) = try await stack.ctl(["master-key", "retire", first, "--key-file", keyFile, "--backups", backups])
        #expect(status == 0 && output.contains("retired master key version \(first)"), "\(output)")
        #expect(try Secrets.parseVersions(String(contentsOfFile: keyFile, encoding: .utf8)).map(MasterKey.versionID(of:)) == [second])

        // Restarted with only the new version: every sealed value opens.
        for service in ["issuance", "validation"] {
            await stack.stop(service)
            try stack.start(service)
            try await stack.waitUntilServing(service)
            try await stack.waitUntilGatewaySees(service)
        }
        #expect(try await admin.call(IssuanceMethods.getCustomer, GetByIdRequest(id: customer.id)).email == "keys@rotated.test")
        let again = try await admin.call(
            IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id),
            metadata: [RPCMetadata.idempotencyKey: "order-1"])
        #expect(again.licenseKey == issued.licenseKey)
        let certificate = try await admin.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: issued.license!.id))
        #expect(!certificate.armored.isEmpty)
        let signed = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, nonce: Array("n-1".utf8)))
        #expect(signed.valid && !signed.signature.isEmpty)
        (status, output) = try await stack.ctl(["master-key", "status"])
        #expect(status == 0 && !output.contains(first), "\(output)")
        // New backups name the new version.
        (status, output) = try await stack.ctl(["backup", "--to", "\(backups)/after", "--master-key", keyFile, "--services", "issuance"])
        #expect(status == 0 && output.contains("master key \(second)"), "\(output)")
    }
}
