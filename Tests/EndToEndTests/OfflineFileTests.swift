import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Testing

/// An offline license file activates a machine that cannot call home: it counts against the
/// same machine limit, is listed among the license's machines, and is refused when the
/// limit is full.
@Suite(.serialized) struct OfflineFileTests {
    @Test func offlineFilesCountAgainstTheMachineLimit() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient()
        defer { Task { await gateway.close() } }

        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Lab", code: "LAB"))
        let policy = try await gateway.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Two machines", licenseType: .perDevice, durationSeconds: 86_400 * 365, maxMachines: 2)))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Lab Ltd", email: "it@lab.test"))
        let issued = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let key = issued.licenseKey
        func offline(_ fingerprint: String, days: Int64 = 30) async throws -> OfflineLicense {
            try await gateway.call(ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(licenseKey: key, fingerprint: fingerprint, validSeconds: days * 86_400))
        }

        #expect(try await gateway.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "online-1")).reason == .valid)
        let airGapped = try await offline("air-gapped-1")
        // Both slots are taken: neither an activation nor another file gets a third.
        #expect(try await gateway.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "online-2")).reason == .machineLimit)
        for fingerprint in ["air-gapped-2", "air-gapped-3", "air-gapped-4"] {
            let refused = await #expect(throws: RPCError.self) { _ = try await offline(fingerprint) }
            #expect(refused?.code == .failedPrecondition)
            #expect(refused?.message.hasPrefix("MACHINE_LIMIT: the license is activated on 2 machines") == true, "\(refused?.message ?? "")")
        }
        // A new file for a machine already bound renews it without taking another slot.
        let renewed = try await offline("air-gapped-1", days: 60)
        #expect(renewed.notAfter > airGapped.notAfter)
        #expect(try await offline("online-1").notAfter > 0)

        let machines = try await gateway.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: issued.license!.id)).machines
        #expect(machines.count == 2)
        let listed = try #require(machines.first { $0.fingerprintHash == LicenseCertificates.fingerprintHash("air-gapped-1") })
        #expect(listed.offlineUntil == renewed.notAfter)
        #expect(machines.first { $0.fingerprintHash == LicenseCertificates.fingerprintHash("online-1") }?.offlineUntil == 0)

        // Freeing a slot lets the next file in.
        _ = try await gateway.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "air-gapped-1"))
        #expect(try await offline("air-gapped-2").notAfter > 0)

        // Longer than the maximum is refused, not silently cut.
        let tooLong = await #expect(throws: RPCError.self) { _ = try await offline("online-1", days: 365) }
        #expect(tooLong?.code == .invalidArgument)
        #expect(tooLong?.message == "an offline license file is valid for at most 90 days (setting offline-max-days); 365 days were asked for")
    }
}
