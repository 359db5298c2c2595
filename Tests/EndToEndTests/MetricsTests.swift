import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LicensingRPC
import LicensingWire
import Testing

/// The opt-in Prometheus endpoint of real processes: per-method call counts by status,
/// latency histograms, and validation's feed position.
@Suite(.serialized) struct MetricsTests {
    func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test func gatewayAndValidationExposeTheirMetrics() async throws {
        let stack = try Stack()
        let gatewayPort = try freePort()
        let validationPort = try freePort()
        try await stack.startAll(extraArguments: [
            "gateway": ["--metrics", "127.0.0.1:\(gatewayPort)"], "validation": ["--metrics", "127.0.0.1:\(validationPort)"],
        ])
        let gateway = stack.gatewayClient()
        _ = try await gateway.call(GatewayMethods.health, HealthCheckRequest())
        await #expect(throws: RPCError.self) { _ = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(id: "lic_none")) }
        // Made-up method names all count as one "unknown" series.
        for index in 0..<3 {
            await #expect(throws: RPCError.self) {
                _ = try await gateway.callRaw("made.up/Method\(index)", payload: [], metadata: [:], deadline: .now + .seconds(5))
            }
        }
        await gateway.close()

        func scrape(_ port: Int) async throws -> String {
            let (body, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
            return String(decoding: body, as: UTF8.self)
        }
        // Counted once the answers are sent; a scrape may come a moment earlier on a busy machine.
        var gatewayMetrics = try await scrape(gatewayPort)
        for _ in 0..<300 where !gatewayMetrics.contains(#"code="UNIMPLEMENTED"} 3"#) {
            try await Task.sleep(for: .milliseconds(50))
            gatewayMetrics = try await scrape(gatewayPort)
        }
        #expect(gatewayMetrics.contains(#"rpc_server_calls_total{method="licensing.v1.Gateway/Health",code="OK"} 1"#), "\(gatewayMetrics)")
        #expect(gatewayMetrics.contains(#"rpc_server_calls_total{method="licensing.v1.Issuance/GetLicense",code="NOT_FOUND"} 1"#))
        #expect(gatewayMetrics.contains("rpc_server_duration_seconds_bucket"))
        #expect(gatewayMetrics.contains(#"rpc_server_calls_total{method="unknown",code="UNIMPLEMENTED"} 3"#), "\(gatewayMetrics)")
        #expect(!gatewayMetrics.contains("made.up"))
        var validationMetrics = try await scrape(validationPort)
        for _ in 0..<300 where !validationMetrics.contains("validation_feed_lag_events 0") {
            try await Task.sleep(for: .milliseconds(50))
            validationMetrics = try await scrape(validationPort)
        }
        #expect(validationMetrics.contains("validation_feed_applied_seq"))
        #expect(validationMetrics.contains("validation_feed_lag_events 0"))
    }
}
