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
        let caughtUp = #"feed_lag_events{feed="issuance"} 0"#
        for _ in 0..<300 where !validationMetrics.contains(caughtUp) {
            try await Task.sleep(for: .milliseconds(50))
            validationMetrics = try await scrape(validationPort)
        }
        #expect(validationMetrics.contains(#"feed_applied_seq{feed="issuance"}"#))
        #expect(validationMetrics.contains(caughtUp))
    }

    /// The figures an operator alerts on, each with a `# HELP` line.
    @Test func operatorFiguresAreExposedWithHelp() async throws {
        let stack = try Stack()
        let ports = (issuance: try freePort(), validation: try freePort(), gateway: try freePort())
        try await stack.startAll(extraArguments: [
            "issuance": ["--metrics", "127.0.0.1:\(ports.issuance)"], "validation": ["--metrics", "127.0.0.1:\(ports.validation)"],
            "gateway": ["--metrics", "127.0.0.1:\(ports.gateway)"],
        ])
        let gateway = stack.gatewayClient()
        defer { Task { await gateway.close() } }
        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Metered", code: "METER"))
        let policy = try await gateway.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Seats", licenseType: .enterprise, durationSeconds: 86_400, maxSeats: 5)))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Meter Ltd"))
        let issued = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        _ = try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey))
        _ = try await gateway.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: issued.licenseKey, clientId: "c1"))

        func scrape(_ port: Int, until wanted: [String]) async throws -> String {
            var text = ""
            for _ in 0..<150 {
                let (body, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
                text = String(decoding: body, as: UTF8.self)
                if wanted.allSatisfy(text.contains) { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            return text
        }
        let issuance = try await scrape(ports.issuance, until: [#"issuance_licenses{state="ACTIVE"} 1"#])
        #expect(issuance.contains(#"issuance_licenses{state="ACTIVE"} 1"#), "\(issuance)")
        #expect(issuance.contains("# HELP issuance_licenses Licenses, by stored state."))
        #expect(issuance.contains("group_commit_batch_size"))
        #expect(issuance.contains(#"sqlite_wal_bytes{database="issuance"}"#))
        let validation = try await scrape(ports.validation, until: ["validation_seats_in_use 1", #"validation_outcomes_total{reason="VALID"} 1"#])
        #expect(validation.contains("validation_seats_in_use 1"), "\(validation)")
        #expect(validation.contains(#"validation_outcomes_total{reason="VALID"} 1"#))
        #expect(validation.contains("# HELP feed_lag_events"))
        let front = try await scrape(ports.gateway, until: ["rpc_server_open_connections"])
        for name in ["process_resident_memory_bytes", "process_open_fds", "rpc_server_open_connections"] {
            #expect(front.contains("# HELP \(name) "), "\(name): \(front)")
        }
        #expect(front.contains("# HELP rpc_server_calls_total Calls answered, by method and status code."))
        let resident = front.split(separator: "\n").first { $0.hasPrefix("process_resident_memory_bytes ") }
        #expect((resident.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0) > 1_000_000, "\(resident ?? "none")")
    }
}
