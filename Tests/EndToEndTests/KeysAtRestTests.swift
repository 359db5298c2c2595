import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Testing

/// Only an HMAC of a license key is stored: after a mixed workload, no file any service
/// wrote (databases with their -wal and -shm files, logs) holds an issued key in any form.
@Suite(.serialized) struct KeysAtRestTests {
    /// Every way a key could sit in a file: as typed, without dashes, in lower case, and its
    /// 128 bits in either byte order.
    static func forms(_ key: String) throws -> [[UInt8]] {
        let plain = key.replacingOccurrences(of: "-", with: "")
        var forms = [key, plain, key.lowercased(), plain.lowercased()].map { Array($0.utf8) }
        let bits = try LicenseKey(parsing: key).bits
        let bigEndian = (0..<16).map { UInt8(truncatingIfNeeded: bits >> (8 * UInt128(15 - $0))) }
        forms += [bigEndian, bigEndian.reversed()]
        return forms
    }

    static func files(under folder: String) -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: folder)
        var files: [String] = []
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(folder)/\(path)", isDirectory: &isDirectory), !isDirectory.boolValue, !path.hasSuffix(".sock") {
                files.append("\(folder)/\(path)")
            }
        }
        return files
    }

    static func occurrences(of needle: [UInt8], in haystack: [UInt8]) -> Bool {
        guard needle.count <= haystack.count, let first = needle.first else { return false }
        var index = 0
        while index <= haystack.count - needle.count {
            if haystack[index] == first, Array(haystack[index..<index + needle.count]) == needle { return true }
            index += 1
        }
        return false
    }

    @Test func noFileHoldsAnIssuedKey() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient()
        defer { Task { await gateway.close() } }

        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Vault", code: "VAULT"))
        let policy = try await gateway.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Seats", licenseType: .enterprise, durationSeconds: 86_400 * 30, maxMachines: 5, maxSeats: 3)))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Vault Ltd", email: "it@vault.test"))
        var keys: [String] = []
        for order in 0..<6 {
            let metadata: RPCMetadata = [RPCMetadata.idempotencyKey: "order-\(order)"]
            let issued = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id), metadata: metadata)
            // A retry gets the first answer, key included, from the sealed record.
            let retried = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id), metadata: metadata)
            #expect(retried.licenseKey == issued.licenseKey)
            keys.append(issued.licenseKey)
            let license = issued.license!
            _ = try await gateway.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "box-\(order)"))
            _ = try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, fingerprint: "box-\(order)"))
            _ = try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey.lowercased().replacingOccurrences(of: "-", with: "")))
            _ = try await gateway.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: issued.licenseKey, clientId: "c\(order)"))
            _ = try await gateway.call(ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(licenseKey: issued.licenseKey, fingerprint: "box-\(order)", validSeconds: 3600))
            _ = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: issued.licenseKey))
            _ = try await gateway.call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: license.id, reason: "audit"))
            _ = try await gateway.call(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: license.id))
            _ = try await gateway.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: license.id))
            _ = try await gateway.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: issued.licenseKey, fingerprint: "box-\(order)"))
        }
        func scan(_ moment: String) throws {
            let files = Self.files(under: stack.folder)
            #expect(files.contains { $0.hasSuffix("issuance.sqlite-wal") } || moment == "after stopping")
            #expect(files.contains { $0.hasSuffix(".log") })
            for file in files {
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
                for key in keys {
                    for form in try Self.forms(key) {
                        #expect(!Self.occurrences(of: form, in: bytes), "\(file) holds license key \(key) \(moment)")
                    }
                }
            }
        }
        try scan("while running")
        for service in ["gateway", "validation", "usage", "reporting", "issuance"] { await stack.stop(service) }
        try scan("after stopping")
    }
}
