import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The services on separate hosts: every call between them over TCP with mutual TLS (the
/// `peer-*` settings; the gateway's `backend-*`), nothing over their Unix sockets.
@Suite(.serialized) struct PeerTLSTests {
    /// Ports free now on 127.0.0.1 (the kernel's choice, released at once).
    static func freePorts(_ count: Int) throws -> [Int] {
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        return try (0..<count).map { _ in
            let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            sockets.append(socket)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
            }
            guard bound else { throw RPCError(.internal, "no free port") }
            return Int(UInt16(bigEndian: address.sin_port))
        }
    }

    @Test func everyServiceTalksToTheOthersOverMutualTLS() async throws {
        let stack = try Stack()
        let tls = "\(stack.folder)/tls"
        try makeCertificates(in: tls)
        let services = ["issuance", "validation", "usage", "reporting", "integrations"]
        let ports = Dictionary(uniqueKeysWithValues: zip(services, try Self.freePorts(services.count)))
        let peers = Dictionary(uniqueKeysWithValues: services.map { ("LM_\($0.uppercased())", "127.0.0.1:\(ports[$0]!)") })
        var arguments: [String: [String]] = [:]
        for service in services {
            // The Unix socket stays for the test's own health probes; peers use TCP only.
            arguments[service] = [
                "--listen", "unix:\(stack.folder)/run/\(service).sock,127.0.0.1:\(ports[service]!)",
                "--tls-cert", "\(tls)/server.pem", "--tls-key", "\(tls)/server.key", "--tls-client-ca", "\(tls)/ca.pem",
            ]
            stack.environment[service] = peers.merging([
                "LM_PEER_CA": "\(tls)/ca.pem", "LM_PEER_CERT": "\(tls)/client.pem", "LM_PEER_KEY": "\(tls)/client.key",
            ]) { $1 }
        }
        stack.environment["integrations", default: [:]]["LM_WEBHOOK_ALLOW_PRIVATE_ADDRESSES"] = "true"
        stack.environment["gateway"] = peers.merging([
            "LM_BACKEND_CA": "\(tls)/ca.pem", "LM_BACKEND_CERT": "\(tls)/client.pem", "LM_BACKEND_KEY": "\(tls)/client.key",
        ]) { $1 }
        try await stack.startAll(extraArguments: arguments)

        // Through the gateway: issue (issuance), validate (validation, which follows
        // issuance's feed), record usage (usage, which resolves the key with validation),
        // then a report (reporting, which follows all three).
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Peers", code: "PEERS"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "P", licenseType: .enterprise, durationSeconds: 86_400 * 30, features: ["export"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Peer Co"))
        let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey)).valid)
        let recorded = try await admin.call(UsageMethods.recordUsage, RecordUsageRequest(events: [
            UsageEvent(eventId: "peer-1", licenseKey: issued.licenseKey, feature: "export", quantity: 3),
        ]))
        #expect(recorded.accepted == 1, "\(recorded)")
        let health = try await admin.call(GatewayMethods.health, HealthCheckRequest())
        #expect(health.components.allSatisfy { $0.code == .ok }, "\(health.components)")
        #expect(await eventually(within: .seconds(30)) {
            (try? await admin.call(UsageMethods.getUsage, GetUsageRequest(licenseId: issued.license!.id)))?
                .features.first { $0.feature == "export" }?.quantity == 3
        })

        // The TCP listeners take no caller without a certificate from the CA.
        for service in services {
            let anonymous = RPCClient(
                endpoint: .tcp(host: "127.0.0.1", port: ports[service]!),
                configuration: RPCClientConfiguration(connections: 1, tls: try RPCTLS.client(ca: "\(tls)/ca.pem")))
            await #expect(throws: RPCError.self, "\(service) answered a caller without a client certificate") {
                _ = try await anonymous.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(3))
            }
            await anonymous.close()
        }
    }

    @Test func aPeerOnPlaintextTCPIsRefusedOutsideDevelopmentMode() async throws {
        let folder = NSTemporaryDirectory() + "lm-peer-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (status, output) = try await Stack.run("license-reporting", ["--data-dir", folder], environment: ["LM_ISSUANCE": "127.0.0.1:7411"])
        #expect(status != 0)
        #expect(output.contains("issuance = 127.0.0.1:7411 is a TCP address: set peer-ca"), "\(output)")
    }
}
