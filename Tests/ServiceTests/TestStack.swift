import Foundation
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Logging
import ValidationService

let testSecret = try! KeyHashSecret(bytes: Array(repeating: 7, count: 32))
let testMasterKey = try! MasterKey(bytes: Array(repeating: 9, count: 32))

/// Creates a product, a policy and a customer; returns (policy id, customer id).
func seedCatalogue(
    _ client: RPCClient, type: LicenseType = .enterprise, duration: Int64 = 0, grace: Int64 = 0, features: [String] = ["export"],
    maxMachines: UInt32 = 0, maxUsers: UInt32 = 0, maxSeats: UInt32 = 0, overage: UInt32 = 1000,
    allowedRegions: [String] = [], deniedRegions: [String] = []
) async throws -> (String, String) {
    let product = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "CAD Pro", code: "CAD-\(UInt16.random(in: 0...9999))"))
    let policy = try await client.call(
        IssuanceMethods.createPolicy,
        CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: type, durationSeconds: duration, graceSeconds: grace,
            maxMachines: maxMachines, maxUsers: maxUsers, maxSeats: maxSeats, features: features,
            allowedRegions: allowedRegions, deniedRegions: deniedRegions, overagePermille: overage)))
    let customer = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme", email: "ops@acme.test"))
    return (policy.id, customer.id)
}

func expectCode(_ code: StatusCode, _ body: () async throws -> Void) async -> String? {
    do {
        try await body()
        return "expected \(code), the call succeeded"
    } catch let error as RPCError {
        return error.code == code ? nil : "expected \(code), got \(error)"
    } catch {
        return "expected \(code), got \(error)"
    }
}

/// Issuance and validation served in-process, validation following issuance's feed;
/// issuance has a signing key.
func withIssuanceAndValidation<T>(
    clock: ManualLicenseClock = ManualLicenseClock(SystemLicenseClock().now),
    options: ValidationService.Options = ValidationService.Options(),
    _ body: (_ issuance: RPCClient, _ validation: RPCClient) async throws -> T
) async throws -> T {
    let folder = TemporaryFolder()
    let issuance = try IssuanceService(
        database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
        keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock, logger: Logger(label: "test"))
    return try await withServer(issuance.router(), in: folder, name: "issuance") { issuanceClient in
        _ = try await issuanceClient.call(IssuanceMethods.createSigningKey, CreateSigningKeyRequest())
        let validation = try ValidationService(
            database: try ValidationService.openDatabase(path: "\(folder.path)/validation.sqlite"),
            issuance: RPCClient(endpoint: issuanceClient.endpoint), keyHashSecret: testSecret, masterKey: testMasterKey,
            clock: clock, options: options, logger: Logger(label: "test"))
        let background = validation.backgroundServices()
        let running = Task {
            try await withThrowingDiscardingTaskGroup { group in
                for part in background { group.addTask { try await part.run() } }
            }
        }
        defer { running.cancel() }
        return try await withServer(validation.router(), in: folder, name: "validation") { client in
            try await body(issuanceClient, client)
        }
    }
}

