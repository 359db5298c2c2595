import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LicensingRuntime
import Logging
import Prometheus
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
}
