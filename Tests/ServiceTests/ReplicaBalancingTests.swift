import Foundation
@testable import GatewayService
import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Logging
import Synchronization
import Testing

/// How the gateway spreads validations over validation's read replicas.
@Suite struct ReplicaBalancingTests {
    /// A stand-in validation service that names itself in every answer and reports the lag
    /// it is told to.
    final class FakeValidation: Sendable {
        /// How many events behind its feed it says it is.
        final class Lag: Sendable {
            let events = Atomic<UInt64>(0)
            let copying = Atomic<Bool>(false)
            func set(_ value: UInt64) { events.store(value, ordering: .relaxed) }
        }
        let name: String
        let lag = Lag()
        let client: RPCClient

        init(_ name: String) {
            self.name = name
            var router = RPCRouter()
            let lag = self.lag
            router.register(ValidationMethods.validate) { _, _ in ValidateResponse(detail: name) }
            router.register(HealthMethods.check) { _, _ in
                HealthCheckResponse(
                    service: "validation", status: lag.copying.load(ordering: .relaxed) ? .degraded : .serving,
                    feeds: [FeedPosition(feed: "issuance", appliedSeq: 10, sourceSeq: 10 + lag.events.load(ordering: .relaxed))])
            }
            client = RPCClient(endpoint: .inProcess(InProcessServer(name, router: router, executor: testServerExecutor)))
        }
    }

    func call() -> ServerCall {
        ServerCall(
            method: ValidationMethods.validate.name, payload: ValidateRequest(licenseKey: "x").serializedBytes(), metadata: [:],
            deadline: .now + .seconds(60), logger: Logger(label: "test"))
    }

    func answer(_ replicas: ReadReplicas) async throws -> String {
        try ValidateResponse(serializedBytes: try await replicas.forward(call()).get()).detail
    }

    @Test func validationsAvoidDeadAndLaggingReplicasAndFallBackToThePrimary() async throws {
        let folder = TemporaryFolder()
        let (one, three, primary) = (FakeValidation("one"), FakeValidation("three"), FakeValidation("primary"))
        let dead = Endpoint.unix(path: "\(folder.path)/dead.sock")
        let clients: [Endpoint: RPCClient] = [one.client.endpoint: one.client, three.client.endpoint: three.client]
        let replicas = ReadReplicas(
            source: .fixed([one.client.endpoint, dead, three.client.endpoint]), primary: Backend(name: "validation", client: primary.client),
            // Timeouts far beyond a loaded machine's stalls: this test is about where calls go.
            maxLag: 100, attemptTimeout: .seconds(30), logger: Logger(label: "test")
        ) { clients[$0] ?? RPCClient(endpoint: $0) }

        // A replica that refuses connections costs no failed call: each goes to another.
        var seen: [String: Int] = [:]
        for _ in 0..<30 { seen[try await answer(replicas), default: 0] += 1 }
        #expect(seen["one", default: 0] > 0 && seen["three", default: 0] > 0 && seen["primary"] == nil, "answers: \(seen)")
        #expect(replicas.replicas.first { $0.endpoint == dead }.map(replicas.inRotation) == false)

        // A replica further behind its feeds than allowed takes no calls once probed.
        three.lag.set(5000)
        await replicas.probe()
        seen = [:]
        for _ in 0..<10 { seen[try await answer(replicas), default: 0] += 1 }
        #expect(seen == ["one": 10])

        // A replica still copying its sources (new, or restarted from nothing) takes none either.
        three.lag.set(0)
        three.lag.copying.store(true, ordering: .relaxed)
        await replicas.probe()
        seen = [:]
        for _ in 0..<10 { seen[try await answer(replicas), default: 0] += 1 }
        #expect(seen == ["one": 10])
        three.lag.copying.store(false, ordering: .relaxed)
        three.lag.set(5000)

        // None in rotation: the primary answers.
        one.lag.set(5000)
        await replicas.probe()
        #expect(try await answer(replicas) == "primary")

        // Caught up again, they are back after the next probe.
        one.lag.set(0)
        three.lag.set(0)
        await replicas.probe()
        seen = [:]
        for _ in 0..<20 { seen[try await answer(replicas), default: 0] += 1 }
        #expect(seen["primary"] == nil && seen.count == 2, "answers: \(seen)")
    }

    @Test func theSettingIsAListOrADNSName() throws {
        guard case .fixed(let endpoints) = try ValidationReplicaSource(parsing: "10.0.0.1:7300, 10.0.0.2:7300") else {
            Issue.record("a list parsed as something else")
            return
        }
        #expect(endpoints == [.tcp(host: "10.0.0.1", port: 7300), .tcp(host: "10.0.0.2", port: 7300)])
        guard case .dns(let host, let port) = try ValidationReplicaSource(parsing: "dns:validation-replica.lm.svc.cluster.local:7300") else {
            Issue.record("a DNS name parsed as something else")
            return
        }
        #expect(host == "validation-replica.lm.svc.cluster.local" && port == 7300)
        #expect(throws: (any Error).self) { try ValidationReplicaSource(parsing: "dns:unix:/tmp/x.sock") }
        #expect(throws: (any Error).self) { try ValidationReplicaSource(parsing: "10.0.0.1") }
        #expect(try ReadReplicas.resolve("localhost").contains { $0 == "127.0.0.1" || $0 == "::1" })
    }
}
