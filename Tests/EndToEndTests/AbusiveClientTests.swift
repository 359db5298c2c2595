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
        let (policy, customer, key) = try await Self.validatingProduct(product)
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
        let slowest = try await Self.pacedValidations(product, key)
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

    /// A flood of calls with made-up API keys from one address (`LM_FLOOD_CALLS`, default
    /// 5,000 over 16 connections' worth of callers, so the suite's other tests keep their
    /// share of the machine; `deploy/abuse` sends 100,000): after its burst of failed authentications the address is refused before any
    /// key is checked, and a product elsewhere is answered as usual.
    @Test func aFloodOfUnauthenticatedCallsFromOneAddressIsRefusedCheaply() async throws {
        let calls = Int(ProcessInfo.processInfo.environment["LM_FLOOD_CALLS"] ?? "") ?? 5_000
        let stack = try Stack()
        try await stack.startAll()
        let product = stack.gatewayClient()
        let (_, _, key) = try await Self.validatingProduct(product)
        let port = try #require(stack.log("gateway").firstMatch(of: /127\.0\.0\.1:(\d+)/).flatMap { Int($0.1) }, "the gateway's TCP port is not in its log")
        let rssBefore = try #require(stack.residentKiB("gateway"))

        // The flood: many connections from 127.0.0.1, each with calls in flight, every key made up.
        let attacker = RPCClient(
            endpoint: .tcp(host: "127.0.0.1", port: port),
            configuration: RPCClientConfiguration(connections: 8, connectTimeout: .seconds(5), metadata: [RPCMetadata.apiKey: "lmk_madeup_\(UUID().uuidString)"]))
        let floodStarted = ContinuousClock.now
        let flood = Task {
            await withTaskGroup(of: [StatusCode: Int].self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        var seen: [StatusCode: Int] = [:]
                        for _ in stride(from: worker, to: calls, by: 16) {
                            do {
                                _ = try await attacker.call(ValidationMethods.validate, ValidateRequest(licenseKey: key), timeout: .seconds(30))
                                seen[.ok, default: 0] += 1
                            } catch let error as RPCError {
                                seen[error.code, default: 0] += 1
                            } catch {
                                seen[.unknown, default: 0] += 1
                            }
                        }
                        return seen
                    }
                }
                return await group.reduce(into: [:]) { total, seen in total.merge(seen, uniquingKeysWith: +) }
            }
        }

        // The well-behaved product, from another source, meanwhile: paced, every one answered.
        let slowest = try await Self.pacedValidations(product, key)
        let outcome = await flood.value
        let floodSeconds = Int((ContinuousClock.now - floodStarted).components.seconds) + 1
        await attacker.close()
        let rssAfter = try #require(stack.residentKiB("gateway"))
        print("abuse: \(calls) calls with made-up keys from one address: \(outcome); the gateway's memory went from \(rssBefore / 1024) to \(rssAfter / 1024) MiB; slowest of 40 paced validations elsewhere \(slowest)")
        #expect(outcome.values.reduce(0, +) == calls)
        #expect(outcome[.ok] == nil, "a made-up key was admitted")
        // The burst (10) and the refill (1 a second) are checked keys; the rest is refused unchecked.
        #expect((outcome[.unauthenticated] ?? 0) <= 10 + floodSeconds, "\(outcome) in \(floodSeconds) s")
        #expect((outcome[.resourceExhausted] ?? 0) >= calls - 10 - floodSeconds, "\(outcome)")
        #expect(slowest < .seconds(3))
        #expect(rssAfter - rssBefore < 256 * 1024, "the gateway grew by \((rssAfter - rssBefore) / 1024) MiB")
        let health = try await product.call(GatewayMethods.health, HealthCheckRequest())
        #expect(health.components.allSatisfy { $0.code == .ok }, "\(health.components)")
        await product.close()
    }

    /// A policy, a customer and a license whose key has validated once: the well-behaved product.
    static func validatingProduct(_ client: RPCClient) async throws -> (policy: String, customer: String, key: String) {
        let product = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Abuse", code: "ABUSE"))
        let policy = try await client.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: .enterprise)))
        let customer = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Abuse Co"))
        let key = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id)).licenseKey
        _ = try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key))
        return (policy.id, customer.id, key)
    }

    /// 40 validations paced under the per-key rate limit, each expected VALID: the slowest.
    static func pacedValidations(_ client: RPCClient, _ key: String) async throws -> Duration {
        var slowest = Duration.zero
        for _ in 0..<40 {
            let started = ContinuousClock.now
            let answer = try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key), timeout: .seconds(10))
            #expect(answer.reason == .valid)
            slowest = max(slowest, ContinuousClock.now - started)
            try await Task.sleep(for: .milliseconds(160))
        }
        return slowest
    }
}
