import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LicensingRuntime
import Logging
import Prometheus
import Synchronization
import Testing

@Suite struct MetricsEndpointTests {
    @Test func servesPrometheusTextOnGetMetrics() async throws {
        let registry = PrometheusCollectorRegistry()
        registry.makeCounter(descriptor: .init(metricName: "licenses_issued_total", unitName: "", helpText: "test")).increment(by: Int64(3))
        let endpoint = MetricsEndpoint(registry: registry, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let running = Task { try await endpoint.run() }
        defer { running.cancel() }
        let port = try await endpoint.listeningPort

        let (body, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        let text = String(decoding: body, as: UTF8.self)
        #expect(text.contains("# TYPE licenses_issued_total counter"))
        #expect(text.contains("licenses_issued_total 3"))

        let (_, other) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/elsewhere")!)
        #expect((other as? HTTPURLResponse)?.statusCode == 404)
    }

    @Test func answersLivenessAndReadinessProbes() async throws {
        let endpoint = MetricsEndpoint(registry: PrometheusCollectorRegistry(), host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let running = Task { try await endpoint.run() }
        defer { running.cancel() }
        let port = try await endpoint.listeningPort
        func get(_ path: String) async throws -> (Int, String) {
            let (body, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: body, as: UTF8.self))
        }
        #expect(try await get("/healthz").0 == 200)
        // Not ready while starting, nor while a check does not hold.
        #expect(try await get("/readyz") == (503, "not ready: starting\n"))
        final class Flag: Sendable { let value = Atomic<Bool>(false) }
        let listening = Flag()
        endpoint.readiness.add("RPC server not listening") { listening.value.load(ordering: .relaxed) }
        #expect(try await get("/readyz") == (503, "not ready: RPC server not listening\n"))
        listening.value.store(true, ordering: .relaxed)
        #expect(try await get("/readyz") == (200, "ready\n"))
    }
}
