import AsyncHTTPClient
import Foundation
import Hummingbird
@testable import IntegrationsService
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import Testing

@Suite struct WebhookSignatureTests {
    let body = Array(#"{"id":"evt_1","type":"invoice.paid"}"#.utf8)

    @Test func aSignatureVerifiesWithinTheToleranceAndWithAnyAcceptedSecret() throws {
        let header = WebhookSignature.sign(body, secret: "whsec_new", at: 1_800_000_000)
        try WebhookSignature.verify(header: header, body: body, secrets: ["whsec_old", "whsec_new"], now: 1_800_000_000 + 299)
        // During a rotation both secrets verify; afterwards only the current one.
        let old = WebhookSignature.sign(body, secret: "whsec_old", at: 1_800_000_000)
        try WebhookSignature.verify(header: old, body: body, secrets: ["whsec_old", "whsec_new"], now: 1_800_000_000)
        #expect(throws: WebhookSignature.Failure.mismatch) { try WebhookSignature.verify(header: old, body: body, secrets: ["whsec_new"], now: 1_800_000_000) }
        // Several v1 values (Stripe sends one per secret while rotating): any may match.
        let both = header + "," + old.split(separator: ",")[1]
        try WebhookSignature.verify(header: both, body: body, secrets: ["whsec_old"], now: 1_800_000_000)
    }

    @Test func everyBadSignatureIsRefusedWithItsReason() {
        let good = WebhookSignature.sign(body, secret: "s", at: 1_800_000_000)
        let cases: [(String?, [UInt8], Int64, WebhookSignature.Failure)] = [
            (nil, body, 1_800_000_000, .missing),
            ("", body, 1_800_000_000, .missing),
            ("v1=abc", body, 1_800_000_000, .malformed),
            ("t=1800000000", body, 1_800_000_000, .malformed),
            ("t=soon,v1=" + String(repeating: "0", count: 64), body, 1_800_000_000, .malformed),
            (good, body, 1_800_000_301, .stale(301)),
            (good, body, 1_799_999_699, .stale(301)),
            (good, body + [0x20], 1_800_000_000, .mismatch),
            ("t=1800000000,v1=" + String(repeating: "0", count: 64), body, 1_800_000_000, .mismatch),
        ]
        for (header, signed, now, failure) in cases {
            #expect(throws: failure) { try WebhookSignature.verify(header: header, body: signed, secrets: ["s"], now: now) }
        }
    }
}

@Suite struct AddressPolicyTests {
    /// Loopback, private, link-local and mapped addresses are refused in every notation.
    @Test func internalAddressesAreRefusedHoweverWritten() throws {
        let policy = AddressPolicy(allowPrivate: false)
        for host in [
            "127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1", "localhost", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
            "100.64.0.1", "0.0.0.0", "::1", "[::1]", "::ffff:127.0.0.1", "::ffff:8.8.8.8", "fe80::1", "fd00::1", "224.0.0.1", "255.255.255.255",
        ] {
            #expect(throws: AddressPolicy.Refusal.self, "\(host)") { _ = try policy.address(for: host) }
        }
        #expect(try policy.address(for: "8.8.8.8") == "8.8.8.8")
        #expect(try policy.address(for: "2001:4860:4860::8888") == "2001:4860:4860::8888")
        #expect(try AddressPolicy(allowPrivate: true).address(for: "127.0.0.1") == "127.0.0.1")
        for url in ["ftp://example.com/", "https://user:pw@example.com/", "https:///nohost", "not a url", "https://" + String(repeating: "a", count: 2001)] {
            #expect(throws: AddressPolicy.Refusal.self, "\(url)") { _ = try AddressPolicy.check(url: url) }
        }
    }
}

/// A local HTTP receiver of webhooks: records each delivery and answers what it is told.
final class WebhookReceiver: Sendable {
    struct Received: Sendable {
        let body: [UInt8]
        let signature: String
        let eventId: String
        let type: String
    }

    let received = SharedValue<[Received]>([])
    /// Status codes to answer, in order; then 200.
    let answers = SharedValue<[Int]>([])
    let address = SharedValue<SocketAddress?>(nil)

    func application() -> some Service {
        let router = Router()
        router.post("/hooks") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 1 << 20)
            self.received.withLock {
                $0.append(Received(
                    body: Array(buffer: body), signature: request.headers[values: .init("LM-Signature")!].first ?? "",
                    eventId: request.headers[values: .init("LM-Event-Id")!].first ?? "", type: request.headers[values: .init("LM-Event-Type")!].first ?? ""))
            }
            let status = self.answers.withLock { $0.isEmpty ? 200 : $0.removeFirst() }
            return Response(status: .init(code: status))
        }
        var logger = Logger(label: "receiver")
        logger.logLevel = .warning
        return Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in self.address.withLock { $0 = channel.localAddress } }, logger: logger)
    }

    var url: String { "http://127.0.0.1:\(address.withLock { $0?.port ?? 0 })/hooks" }
}

/// Issuance, validation, usage and integrations in-process; integrations' HTTP listener on
/// a free loopback port, deliveries allowed to loopback, retries after a second.
struct IntegrationsStack {
    let stack: ComplianceStack
    let integrations: RPCClient
    let service: IntegrationsService
    let http: String

    static func run<T>(
        clock: ManualLicenseClock = ManualLicenseClock(1_800_000_000), expiryInterval: Duration? = nil,
        configure: (inout IntegrationsService.Options) -> Void = { _ in }, _ body: (IntegrationsStack) async throws -> T
    ) async throws -> T {
        try await ComplianceStack.run(clock: clock, expiryInterval: expiryInterval) { stack in
            var options = IntegrationsService.Options()
            options.httpPort = 0
            options.allowPrivateAddresses = true
            options.retryBaseSeconds = 1
            options.maxAttempts = 3
            options.disableAfterSeconds = 3600
            options.deliveryInterval = .milliseconds(20)
            options.followInterval = .milliseconds(20)
            configure(&options)
            let folder = stack.folder.path
            let service = IntegrationsService(
                database: try IntegrationsService.openDatabase(path: "\(folder)/integrations.sqlite"), issuance: RPCClient(endpoint: stack.issuance.endpoint),
                validation: RPCClient(endpoint: stack.validation.endpoint), usage: RPCClient(endpoint: stack.usage.endpoint),
                clock: clock, options: options, logger: Logger(label: "test.integrations"))
            let endpoint = Endpoint.inProcess(InProcessServer("integrations", router: service.router(), executor: testServerExecutor))
            let parts = try service.services(configuration: RPCServerConfiguration(endpoints: [endpoint]))
            let running = runInBackground(parts)
            defer { running.cancel() }
            #expect(await eventually { service.httpAddress != nil })
            let client = RPCClient(endpoint: endpoint)
            let result = try await body(IntegrationsStack(stack: stack, integrations: client, service: service, http: "http://127.0.0.1:\(service.httpAddress!.port!)"))
            await client.close()
            return result
        }
    }

    /// POSTs an event, signed with `secret` at the stack's clock (unless `header` says otherwise).
    func post(_ path: String, _ event: [String: Any], secret: String, header: String? = nil, raw: [UInt8]? = nil) async throws -> (Int, String) {
        let body = try raw ?? Array(JSONSerialization.data(withJSONObject: event))
        var request = HTTPClientRequest(url: http + path)
        request.method = .POST
        let name = path.contains("/stripe/") ? "Stripe-Signature" : "LM-Signature"
        request.headers.add(name: name, value: header ?? WebhookSignature.sign(body, secret: secret, at: stack.clock.now))
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        return (Int(response.status.code), text)
    }
}

@Suite struct InboundWebhookTests {
    @Test func stripeEventsApplyOnceAndBadInputIsRefusedWithAReason() async throws {
        try await IntegrationsStack.run { world in
            let stack = world.stack
            let (policy, _) = try await seedCatalogue(stack.issuance, type: .subscription, duration: 30 * 86400, grace: 7 * 86400)
            let secret = try await world.integrations.call(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: "stripe", secret: "whsec_first_secret_1234"))
            #expect(secret.path == "/webhooks/stripe/default" && secret.secret.isEmpty && secret.previousValidUntil == 0)
            _ = try await world.integrations.call(IntegrationsMethods.mapPrice, MapPriceRequest(priceId: "price_pro", policyId: policy))
            let path = "/webhooks/stripe/default"

            let checkout: [String: Any] = [
                "id": "evt_checkout_1", "type": "checkout.session.completed",
                "data": ["object": [
                    "id": "cs_1", "customer": "cus_stripe_9", "subscription": "sub_stripe_9", "payment_intent": "pi_9", "amount_total": 4900, "currency": "eur",
                    "metadata": ["price_id": "price_pro"], "customer_details": ["email": "buyer@example.test", "name": "Buyer Ltd"],
                ]],
            ]
            let (status, text) = try await world.post(path, checkout, secret: "whsec_first_secret_1234")
            #expect(status == 200 && text.contains("issued under policy"), "\(text)")
            // The provider retries: answered 200, applied once.
            let (again, againText) = try await world.post(path, checkout, secret: "whsec_first_secret_1234")
            #expect(again == 200 && againText.contains("applied before"), "\(againText)")
            let customers = try await stack.issuance.call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: "cus_stripe_9")).customers
            #expect(customers.count == 1 && customers.first?.email == "buyer@example.test")
            let licenses = try await stack.issuance.call(IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customers[0].id)).licenses
            #expect(licenses.count == 1 && licenses.first?.policyId == policy)
            let license = licenses[0].id

            // Invoice paid, then a failed payment, then a refund revokes the license.
            let paid: [String: Any] = [
                "id": "evt_paid_1", "type": "invoice.paid",
                "data": ["object": ["id": "in_1", "subscription": "sub_stripe_9", "amount_paid": 4900, "currency": "eur", "charge": "ch_1",
                                    "period_start": stack.clock.now, "period_end": stack.clock.now + 30 * 86400]],
            ]
            #expect(try await world.post(path, paid, secret: "whsec_first_secret_1234").0 == 200)
            let failed: [String: Any] = ["id": "evt_failed_1", "type": "invoice.payment_failed", "data": ["object": ["id": "in_2", "subscription": "sub_stripe_9"]]]
            let (failedStatus, failedText) = try await world.post(path, failed, secret: "whsec_first_secret_1234")
            #expect(failedStatus == 200 && failedText.contains("past due"), "\(failedText)")
            // A secret rotation: the old secret still verifies for a day.
            let rotated = try await world.integrations.call(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: "stripe", secret: "whsec_second_secret_567"))
            #expect(rotated.previousValidUntil == stack.clock.now + 86400)
            let refund: [String: Any] = ["id": "evt_refund_1", "type": "charge.refunded", "data": ["object": ["id": "ch_1", "invoice": "in_1"]]]
            let (refundStatus, refundText) = try await world.post(path, refund, secret: "whsec_first_secret_1234")
            #expect(refundStatus == 200 && refundText.contains("revoked"), "\(refundText)")
            #expect(try await stack.issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license)).state == .revoked)
            // An event for something unknown is stored and answered 200, not retried for ever.
            let stray: [String: Any] = ["id": "evt_stray", "type": "invoice.paid", "data": ["object": [
                "id": "in_x", "subscription": "sub_nobody", "amount_paid": 1, "currency": "usd", "period_start": stack.clock.now, "period_end": stack.clock.now + 86400]]]
            let (strayStatus, strayText) = try await world.post(path, stray, secret: "whsec_second_secret_567")
            #expect(strayStatus == 200 && strayText.contains("no subscription"), "\(strayStatus) \(strayText)")

            // What issuance refuses is answered 422 with its reason, and not stored.
            let noPeriod: [String: Any] = ["id": "evt_no_period", "type": "invoice.paid", "data": ["object": ["id": "in_y", "subscription": "sub_stripe_9", "amount_paid": 1, "currency": "usd"]]]
            let (refused, refusedText) = try await world.post(path, noPeriod, secret: "whsec_second_secret_567")
            #expect(refused == 422 && refusedText.contains("period_end"), "\(refusedText)")
            // Bad input: a clear 4xx with the reason, nothing changed.
            let event: [String: Any] = ["id": "evt_bad", "type": "invoice.paid", "data": ["object": [:]]]
            let body = Array(try JSONSerialization.data(withJSONObject: event))
            let stale = WebhookSignature.sign(body, secret: "whsec_second_secret_567", at: stack.clock.now - 600)
            let cases: [(String, [String: Any], String?, [UInt8]?, Int, String)] = [
                (path, event, "", nil, 401, "missing"),
                (path, event, WebhookSignature.sign(body, secret: "whsec_wrong", at: stack.clock.now), nil, 401, "does not match"),
                (path, event, stale, body, 401, "timestamp"),
                (path, event, nil, Array("{not json".utf8), 400, "not a JSON object"),
                (path, ["id": "evt_u", "type": "customer.created"], nil, nil, 400, "unknown event type"),
                (path, event, nil, Array(repeating: 0x20, count: (1 << 20) + 1), 413, "larger than 1 MiB"),
                ("/webhooks/stripe/nobody", event, nil, nil, 404, "no signing secret"),
                ("/webhooks/paypal/default", event, nil, nil, 404, "no webhook source"),
            ]
            for (target, payload, header, raw, expected, reason) in cases {
                let (status, text) = try await world.post(target, payload, secret: "whsec_second_secret_567", header: header, raw: raw)
                #expect(status == expected && text.contains(reason), "\(target) \(expected): \(status) \(text)")
            }
        }
    }

    @Test func crmAndErpEventsCreateCustomersLicensesAndDepartments() async throws {
        try await IntegrationsStack.run { world in
            let stack = world.stack
            let (policy, _) = try await seedCatalogue(stack.issuance)
            let crm = try await world.integrations.call(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: "crm"))
            let erp = try await world.integrations.call(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: "erp"))
            #expect(crm.secret.hasPrefix("lmsec_") && crm.path == "/webhooks/crm/default")
            let created: [String: Any] = ["id": "crm-1", "type": "customer.created", "created": stack.clock.now,
                                          "data": ["external_id": "acct-77", "name": "Initech", "email": "it@initech.test", "enterprise": true]]
            #expect(try await world.post(crm.path, created, secret: crm.secret).0 == 200)
            let updated: [String: Any] = ["id": "crm-2", "type": "customer.updated", "data": ["external_id": "acct-77", "name": "Initech Corp"]]
            #expect(try await world.post(crm.path, updated, secret: crm.secret).0 == 200)
            let customers = try await stack.issuance.call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: "acct-77")).customers
            #expect(customers.map(\.name) == ["Initech Corp"])
            let deal: [String: Any] = ["id": "crm-3", "type": "deal.won", "data": ["customer_external_id": "acct-77", "policy_id": policy, "quantity": 3]]
            let (dealStatus, dealText) = try await world.post(crm.path, deal, secret: crm.secret)
            #expect(dealStatus == 200 && dealText.contains("3 license(s)"), "\(dealText)")
            #expect(try await world.post(crm.path, deal, secret: crm.secret).1.contains("applied before"))
            #expect(try await stack.issuance.call(IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customers[0].id)).licenses.count == 3)
            let department: [String: Any] = ["id": "erp-1", "type": "department.created",
                                             "data": ["customer_external_id": "acct-77", "name": "Design", "max_seats": 5, "max_machines": 10]]
            let (departmentStatus, departmentText) = try await world.post(erp.path, department, secret: erp.secret)
            #expect(departmentStatus == 200, "\(departmentText)")
            let departments = try await stack.issuance.call(IssuanceMethods.listDepartments, GetByIdRequest(id: customers[0].id)).departments
            #expect(departments.map { "\($0.name) \($0.maxSeats) \($0.maxMachines)" } == ["Design 5 10"])
            // The ERP renames it and changes its limits; a replay changes nothing more.
            let changed: [String: Any] = ["id": "erp-2", "type": "department.updated",
                                          "data": ["customer_external_id": "acct-77", "name": "Design", "new_name": "Product Design", "max_seats": 8, "max_machines": 12]]
            let (changedStatus, changedText) = try await world.post(erp.path, changed, secret: erp.secret)
            #expect(changedStatus == 200 && changedText.contains("updated"), "\(changedText)")
            #expect(try await world.post(erp.path, changed, secret: erp.secret).1.contains("applied before"))
            let renamed = try await stack.issuance.call(IssuanceMethods.listDepartments, GetByIdRequest(id: customers[0].id)).departments
            #expect(renamed.map { "\($0.name) \($0.maxSeats) \($0.maxMachines)" } == ["Product Design 8 12"])
            let missing: [String: Any] = ["id": "erp-3", "type": "department.updated", "data": ["customer_external_id": "acct-77", "name": "Nowhere"]]
            let (missingStatus, missingText) = try await world.post(erp.path, missing, secret: erp.secret)
            #expect(missingStatus == 200 && missingText.contains("no department named Nowhere"), "\(missingText)")
            // A CRM secret does not sign ERP events; missing fields are named.
            #expect(try await world.post(erp.path, department, secret: crm.secret).0 == 401)
            let incomplete: [String: Any] = ["id": "crm-4", "type": "customer.created", "data": ["name": "No id"]]
            let (status, text) = try await world.post(crm.path, incomplete, secret: crm.secret)
            #expect(status == 400 && text.contains("data.external_id"), "\(text)")
        }
    }
}

@Suite struct OutboundWebhookTests {
    @Test func eventsAreDeliveredSignedAndRetriedWithBackoff() async throws {
        let receiver = WebhookReceiver()
        let serving = Task { try await receiver.application().run() }
        defer { serving.cancel() }
        #expect(await eventually(within: .seconds(60)) { receiver.address.withLock { $0 } != nil })
        try await IntegrationsStack.run { world in
            let stack = world.stack
            let created = try await world.integrations.call(
                IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: receiver.url, eventTypes: ["license.issued", "license.revoked", "machine.activated"]))
            #expect(created.secret.hasPrefix("whsec_") && created.endpoint?.url == receiver.url)
            // The receiver fails the first attempt: the delivery is retried.
            receiver.answers.withLock { $0 = [500] }
            let (policy, customer) = try await seedCatalogue(stack.issuance)
            let issued = try await stack.issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            #expect(try await eventually { receiver.received.withLock { $0.count } >= 1 })
            // The attempt is logged once the receiver has answered.
            var deliveries: [WebhookDelivery] = []
            #expect(try await eventually {
                deliveries = try await world.integrations.call(IntegrationsMethods.listDeliveries, ListDeliveriesRequest()).deliveries
                return deliveries.first?.attempts == 1
            })
            #expect(deliveries.first?.status == "retrying" && deliveries.first?.lastStatusCode == 500, "\(deliveries)")
            // Full jitter over a 1 s base: the next attempt 0.5 to 1 s after the first.
            let wait = (deliveries.first?.nextAttemptAt ?? 0) - stack.clock.now
            #expect((0...1).contains(wait), "retry in \(wait) s")
            stack.clock.advance(by: 2)
            #expect(try await eventually {
                deliveries = try await world.integrations.call(IntegrationsMethods.listDeliveries, ListDeliveriesRequest()).deliveries
                return deliveries.first?.status == "delivered"
            }, "\(deliveries)")
            #expect(deliveries.first?.attempts == 2 && deliveries.first?.lastStatusCode == 200)

            _ = try await stack.validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "pc"))
            _ = try await stack.issuance.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: issued.license!.id, reason: "fraud"))
            #expect(try await eventually { Set(receiver.received.withLock { $0.map(\.type) }) == ["license.issued", "machine.activated", "license.revoked"] })
            for delivery in receiver.received.withLock({ $0 }) {
                // Each is signed with the endpoint's secret, carries its id, names no key.
                try WebhookSignature.verify(header: delivery.signature, body: delivery.body, secrets: [created.secret], now: stack.clock.now)
                let event = try JSONSerialization.jsonObject(with: Data(delivery.body)) as? [String: Any]
                #expect(event?["id"] as? String == delivery.eventId && event?["type"] as? String == delivery.type)
                #expect(!String(decoding: delivery.body, as: UTF8.self).contains(issued.licenseKey))
            }
            let revoked = receiver.received.withLock { $0.first { $0.type == "license.revoked" } }
            let data = (try JSONSerialization.jsonObject(with: Data(revoked!.body)) as? [String: Any])?["data"] as? [String: Any]
            #expect(data?["license_id"] as? String == issued.license!.id && data?["reason"] as? String == "fraud")

            // A delivery sent again by hand goes out again, with the same event id.
            let first = try #require(deliveries.first)
            let again = try await world.integrations.call(IntegrationsMethods.redeliver, GetByIdRequest(id: first.id))
            #expect(again.attempts == 3 && again.status == "delivered")
            #expect(receiver.received.withLock { $0.filter { $0.eventId == first.eventId }.count } == 3)
        }
    }

    @Test func anEndpointFailingLongIsDisabledAndPrivateAddressesAreRefused() async throws {
        let receiver = WebhookReceiver()
        let serving = Task { try await receiver.application().run() }
        defer { serving.cancel() }
        #expect(await eventually(within: .seconds(60)) { receiver.address.withLock { $0 } != nil })
        try await IntegrationsStack.run { world in
            let stack = world.stack
            receiver.answers.withLock { $0 = Array(repeating: 503, count: 100) }
            let endpoint = try await world.integrations.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: receiver.url)).endpoint!
            let (policy, customer) = try await seedCatalogue(stack.issuance)
            _ = try await stack.issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            #expect(try await eventually { receiver.received.withLock { $0.count } >= 1 })
            // Three attempts, then the delivery has failed; an hour of failures disables the
            // endpoint. Each attempt waits for the clock to pass its retry time.
            var listed: [WebhookEndpoint] = []
            #expect(try await eventually(within: .seconds(60), every: .milliseconds(100)) {
                stack.clock.advance(by: 1800)
                try await Task.sleep(for: .milliseconds(100))
                listed = try await world.integrations.call(IntegrationsMethods.listWebhookEndpoints, ListWebhookEndpointsRequest()).endpoints
                return listed.first?.disabled == true
            }, "\(listed)")
            #expect(listed.first?.disabledReason.contains("failed") == true && listed.first?.id == endpoint.id)
            let failed = try await world.integrations.call(IntegrationsMethods.listDeliveries, ListDeliveriesRequest(status: "failed")).deliveries
            #expect(!failed.isEmpty && failed.allSatisfy { $0.lastStatusCode == 503 || $0.lastError.contains("disabled") })

            // Deletion, and unknown event types.
            _ = try await world.integrations.call(IntegrationsMethods.deleteWebhookEndpoint, GetByIdRequest(id: endpoint.id))
            #expect(try await world.integrations.call(IntegrationsMethods.listWebhookEndpoints, ListWebhookEndpointsRequest()).endpoints.isEmpty)
            #expect(await expectCode(.invalidArgument) {
                _ = try await world.integrations.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: receiver.url, eventTypes: ["license.sold"]))
            } == nil)
        }
        // Without the test setting, endpoints inside the network are refused when created.
        let folder = TemporaryFolder()
        let nowhere = RPCClient(endpoint: .unix(path: "\(folder.path)/absent.sock"))
        let strict = IntegrationsService(
            database: try IntegrationsService.openDatabase(path: "\(folder.path)/integrations.sqlite"), issuance: nowhere, validation: nowhere, usage: nowhere,
            logger: Logger(label: "test"))
        try await withServer(strict.router(), in: folder, name: "integrations") { client in
            for url in ["http://127.0.0.1:8080/hooks", "http://2130706433/", "http://0177.0.0.1/", "http://[::1]/", "http://[::ffff:10.0.0.1]/", "http://169.254.169.254/latest", "http://localhost/"] {
                do {
                    _ = try await client.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: url))
                    Issue.record("\(url) was accepted")
                } catch let error as RPCError {
                    #expect(error.code == .invalidArgument && error.message.contains("public addresses only"), "\(url): \(error)")
                }
            }
        }
        await nowhere.close()
    }
}
