import Foundation
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import ValidationService

/// A temporary folder removed when the test ends.
final class TemporaryFolder: Sendable {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "lm-svc-" + UUID().uuidString.prefix(8)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Serves a router on a Unix socket in `folder` until the body returns.
func withServer<T>(
    _ router: RPCRouter, in folder: TemporaryFolder, name: String,
    _ body: (RPCClient) async throws -> T
) async throws -> T {
    let server = RPCServer(
        router: router, configuration: RPCServerConfiguration(endpoints: [.unix(path: "\(folder.path)/\(name).sock")]),
        logger: Logger(label: "test.\(name)"))
    let task = Task { try await server.run() }
    defer { task.cancel() }
    let endpoint = try await server.listeningEndpoints[0]
    let client = RPCClient(endpoint: endpoint)
    let result = try await body(client)
    await client.close()
    return result
}

let testSecret = try! KeyHashSecret(bytes: Array(repeating: 7, count: 32))
let testMasterKey = try! MasterKey(bytes: Array(repeating: 9, count: 32))

/// Creates a product, a policy and a customer; returns (policy id, customer id).
func seedCatalogue(_ client: RPCClient, duration: Int64 = 0, grace: Int64 = 0, features: [String] = ["export"]) async throws -> (String, String) {
    let product = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "CAD Pro", code: "CAD-\(UInt16.random(in: 0...9999))"))
    let policy = try await client.call(
        IssuanceMethods.createPolicy,
        CreatePolicyRequest(policy: Policy(productId: product.id, name: "Standard", licenseType: .perDevice, durationSeconds: duration, graceSeconds: grace, features: features)))
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
