import AsyncHTTPClient
import Crypto
import Foundation
import Hummingbird
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// The real executables: a CRM posts signed events to license-integrations, licenses are
/// issued, and the vendor's receiver gets signed webhooks — every one of them, even with
/// license-integrations killed (SIGKILL) while deliveries are failing and restarted.
@Suite(.serialized) struct IntegrationsStoryTests {
    /// The documented signature, computed independently: HMAC-SHA256 of "<t>.<body>".
    static func sign(_ body: [UInt8], secret: String, at time: Int64) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("\(time).".utf8) + body, using: SymmetricKey(data: Array(secret.utf8)))
        return "t=\(time),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    @Test func crmEventsBecomeLicensesAndEveryWebhookArrivesAcrossAKill() async throws {
        // The receiver: fails every delivery until told otherwise.
        let received = SharedValue<[(id: String, type: String, body: [UInt8], signature: String)]>([])
        let failing = SharedValue(true)
        let bound = SharedValue<Int?>(nil)
        let router = Router()
        router.post("/hooks") { request, _ -> Response in
            var request = request
            let body = Array(buffer: try await request.collectBody(upTo: 1 << 20))
            if failing.withLock({ $0 }) { return Response(status: .serviceUnavailable) }
            received.withLock {
                $0.append((request.headers[values: .init("LM-Event-Id")!].first ?? "", request.headers[values: .init("LM-Event-Type")!].first ?? "", body,
                           request.headers[values: .init("LM-Signature")!].first ?? ""))
            }
            return Response(status: .ok)
        }
        let receiver = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in bound.withLock { $0 = channel.localAddress?.port } })
        let serving = Task { try await receiver.run() }
        defer { serving.cancel() }
        #expect(await eventually(within: .seconds(60)) { bound.withLock { $0 } != nil })
        let receiverURL = "http://127.0.0.1:\(try #require(bound.withLock { $0 }))/hooks"

        let stack = try Stack()
        // Loopback receivers are allowed in this test only; retries after a second.
        stack.environment["integrations"] = ["LM_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true", "LM_WEBHOOK_RETRY_BASE_SECONDS": "1"]
        try await stack.startAll()

        let created = try await stack.ctl(["webhook", "create", receiverURL, "--events", "license.issued"])
        #expect(created.0 == 0, "\(created.1)")
        let secret = try #require(created.1.split(separator: "\n").first { $0.contains("shown once") }?.split(separator: " ").last.map(String.init))
        let rotated = try await stack.ctl(["integration", "secret", "rotate", "--source", "crm"])
        #expect(rotated.0 == 0 && rotated.1.contains("/webhooks/crm/default"), "\(rotated.1)")
        let crmSecret = try #require(rotated.1.split(separator: "\n").first { $0.contains("shown once") }?.split(separator: " ").last.map(String.init))
        let product = try await stack.ctlJSON(["product", "create", "--name", "Studio", "--code", "STU"])["id"] as! String
        let policy = try await stack.ctlJSON(["policy", "create", "--product", product, "--name", "Seat", "--type", "enterprise"])["id"] as! String

        func post(_ event: [String: Any]) async throws -> (Int, String) {
            let body = Array(try JSONSerialization.data(withJSONObject: event))
            let base = try #require(stack.integrationsHTTP, "no listener address in the log: \(stack.log("integrations").suffix(1000))")
            var request = HTTPClientRequest(url: base + "/webhooks/crm/default")
            request.method = .POST
            request.headers.add(name: "LM-Signature", value: Self.sign(body, secret: crmSecret, at: Int64(Date().timeIntervalSince1970)))
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
        }
        #expect(try await post(["id": "c-1", "type": "customer.created", "data": ["external_id": "acct-1", "name": "Hooli"]]).0 == 200)
        let deal: [String: Any] = ["id": "d-1", "type": "deal.won", "data": ["customer_external_id": "acct-1", "policy_id": policy, "quantity": 5]]
        let (status, text) = try await post(deal)
        #expect(status == 200 && text.contains("5 license(s)"), "\(text)")

        // Deliveries are failing: kill license-integrations, start it again, let them through.
        #expect(try await eventually(within: .seconds(20)) { try await stack.ctl(["webhook", "deliveries", "--status", "retrying"]).1.contains("license.issued") })
        stack.kill("integrations")
        try stack.start("integrations")
        try await stack.waitUntilServing("integrations")
        failing.withLock { $0 = false }
        #expect(try await eventually(within: .seconds(30)) { Set(received.withLock { $0.map(\.id) }).count == 5 }, "\(received.withLock { $0.map(\.id) })")
        for delivery in received.withLock({ $0 }) {
            #expect(delivery.type == "license.issued")
            let time = Int64(delivery.signature.split(separator: ",").first?.dropFirst(2) ?? "0") ?? 0
            #expect(delivery.signature == Self.sign(delivery.body, secret: secret, at: time), "the delivery's signature verifies with the endpoint's secret")
        }
        // The CRM retries the deal after the restart: applied once.
        let (again, againText) = try await post(deal)
        #expect(again == 200 && againText.contains("applied before"), "\(againText)")
        let customers = try await stack.ctlJSON(["customer", "list"])["customers"] as? [[String: Any]] ?? []
        let customer = try #require(customers.first { $0["crm_id"] as? String == "acct-1" }?["id"] as? String)
        let licenses = try await stack.ctlJSON(["license", "list", "--customer", customer])["licenses"] as? [[String: Any]] ?? []
        #expect(licenses.count == 5)

        // Endpoints inside the network are refused without the test setting; the delivery log is there.
        #expect(try await stack.ctl(["webhook", "deliveries"]).1.contains("delivered"))
        let (listed, endpoints) = try await stack.ctl(["webhook", "list"])
        #expect(listed == 0 && endpoints.contains(receiverURL), "\(endpoints)")
    }
}
