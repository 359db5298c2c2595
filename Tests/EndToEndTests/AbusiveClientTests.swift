import Foundation
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import NIOCore
import NIOPosix
import Testing

/// Clients that hold connections open and do nothing, and one that sends without ever
/// reading an answer, against the real gateway: a well-behaved product is still answered,
/// and the gateway's memory stays bounded. `LM_IDLE_CONNECTIONS` sets how many idle
/// connections (default 3,000 here; `deploy/abuse` holds 10,000).
@Suite(.serialized) struct AbusiveClientTests {
    @Test func idleAndNonReadingClientsDoNotStarveAWellBehavedOne() async throws {
        let idle = Int(ProcessInfo.processInfo.environment["LM_IDLE_CONNECTIONS"] ?? "") ?? 3_000
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        // This process holds one end of each connection, the gateway (which inherits the limit) the other.
        try #require(Int(limit.rlim_cur) >= idle + 1_000, "ulimit -n is \(limit.rlim_cur): too low for \(idle) connections")

        let stack = try Stack()
        try await stack.startAll()
        let product = stack.gatewayClient()
        let (policy, customer) = (
            try await product.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
                productId: try await product.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Idle", code: "IDLE")).id,
                name: "P", licenseType: .enterprise))).id,
            try await product.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Idle Co")).id)
        let key = try await product.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
        _ = try await product.call(ValidationMethods.validate, ValidateRequest(licenseKey: key))
        // The greedy client has a product key and a license of its own: the limits per key
        // and per license that it runs into are not the well-behaved product's.
        let greedyKey = try await product.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "greedy", role: .product)).secret
        let greedyLicense = try await product.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
        let rssBefore = try #require(stack.residentKiB("gateway"))

        // Idle connections: connected, never a byte sent.
        let socket = "\(stack.folder)/run/gateway.sock"
        let group = MultiThreadedEventLoopGroup.singleton
        var held: [any Channel] = []
        for _ in 0..<idle {
            held.append(try await ClientBootstrap(group: group).connect(unixDomainSocketPath: socket).get())
        }
        // A client that sends 20,000 validations and reads nothing.
        let greedy = try await ClientBootstrap(group: group).channelOption(.autoRead, value: false)
            .connect(unixDomainSocketPath: socket).get()
        var frames = ByteBuffer()
        for index in 0..<20_000 {
            var envelope = ByteBuffer()
            Envelope(callId: UInt64(index + 1), kind: .request, method: ValidationMethods.validate.name,
                     payload: ValidateRequest(licenseKey: greedyLicense).serializedBytes(),
                     metadata: [MetadataEntry(key: RPCMetadata.apiKey, value: greedyKey)]).serialize(into: &envelope)
            frames.writeInteger(UInt32(envelope.readableBytes))
            frames.writeBuffer(&envelope)
        }
        // Its writes stop completing once the gateway stops reading it: do not wait for them.
        greedy.writeAndFlush(frames, promise: nil)

        // The well-behaved product: paced validations, every one answered, none slow.
        var slowest = Duration.zero
        for _ in 0..<40 {
            let started = ContinuousClock.now
            let answer = try await product.call(ValidationMethods.validate, ValidateRequest(licenseKey: key), timeout: .seconds(10))
            #expect(answer.reason == .valid)
            slowest = max(slowest, ContinuousClock.now - started)
            try await Task.sleep(for: .milliseconds(160))
        }
        let health = try await product.call(GatewayMethods.health, HealthCheckRequest())
        #expect(health.components.allSatisfy { $0.code == .ok }, "\(health.components)")
        let rssAfter = try #require(stack.residentKiB("gateway"))
        let perConnection = Double(rssAfter - rssBefore) * 1024 / Double(idle + 1)
        print("abuse: \(idle) idle connections and one that reads nothing held; the gateway's memory went from \(rssBefore / 1024) to \(rssAfter / 1024) MiB (\(Int(perConnection)) bytes a connection); slowest of 40 paced validations \(slowest)")
        // Generous bounds a loaded machine keeps: the point is that nothing grows without limit.
        #expect(slowest < .seconds(3))
        #expect(rssAfter - rssBefore < 512 * 1024, "the gateway grew by \((rssAfter - rssBefore) / 1024) MiB")
        for channel in held { channel.close(promise: nil) }
        greedy.close(promise: nil)
        await product.close()
    }
}
