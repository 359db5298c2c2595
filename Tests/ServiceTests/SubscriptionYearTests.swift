import Foundation
@testable import IntegrationsService
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// A subscription's year, with time injected (one manual clock for every service, nothing
/// waited for): bought through a signed Stripe-format event, renewed twice by payments, a
/// failed payment that gives grace, the recovery, the cancellation and the end. At each
/// step: the license's state in issuance, the e-mails a real SMTP server received, and the
/// webhooks a real HTTP receiver got.
@Suite(.serialized) struct SubscriptionYearTests {
    static let day: Int64 = 86400

    @Test func aYearOfASubscriptionFromPurchaseToCancellation() async throws {
        let folder = TemporaryFolder()
        let smtp = try await SMTPServer.start(folder: folder)
        defer { smtp.stop() }
        #expect(await smtp.waitUntilListening(), "aiosmtpd did not start (apt-get install python3-aiosmtpd)")
        let receiver = WebhookReceiver()
        let serving = Task { try await receiver.application().run() }
        defer { serving.cancel() }
        #expect(await eventually(within: .seconds(60)) { receiver.address.withLock { $0 } != nil })
        let start: Int64 = 1_800_000_000 / Self.day * Self.day
        let clock = ManualLicenseClock(start)
        try await IntegrationsStack.run(clock: clock, expiryInterval: .milliseconds(50)) { options in
            options.smtp = SMTPMailer.Settings(host: "localhost", port: smtp.port, startTLS: true, from: "licenses@vendor.test", ca: smtp.ca)
            options.reminderInterval = .milliseconds(50)
            options.keyMailInterval = .milliseconds(50)
            options.consoleURL = "https://licenses.vendor.test"
        } _: { world in
            let stack = world.stack
            let issuance = stack.issuance
            let (policy, _) = try await seedCatalogue(issuance, type: .subscription, duration: 30 * Self.day, grace: 7 * Self.day, features: ["render"])
            _ = try await world.integrations.call(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: "stripe", secret: "whsec_year_secret_0001"))
            _ = try await world.integrations.call(IntegrationsMethods.mapPrice, MapPriceRequest(priceId: "price_monthly", policyId: policy))
            _ = try await world.integrations.call(IntegrationsMethods.setRenewalOptions, RenewalOptions(policyId: policy, days: [1], renewalUrl: "https://shop.vendor.test/renew/{license_id}"))
            _ = try await world.integrations.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: receiver.url))
            var event = 0
            func stripe(_ type: String, _ object: [String: Any]) async throws {
                event += 1
                let (status, text) = try await world.post("/webhooks/stripe/default", ["id": "evt_\(event)", "type": type, "data": ["object": object]], secret: "whsec_year_secret_0001")
                #expect(status == 200, "\(type): \(status) \(text)")
            }
            func invoicePaid(_ id: String, from: Int64, to: Int64) async throws {
                try await stripe("invoice.paid", [
                    "id": id, "subscription": "sub_year", "amount_paid": 1900, "currency": "usd", "charge": "ch_\(id)",
                    "lines": ["data": [["period": ["start": start + from * Self.day, "end": start + to * Self.day]]]],
                ])
            }
            func at(_ days: Int64, plus seconds: Int64 = 0) { clock.set(start + days * Self.day + seconds) }
            func license() async throws -> License {
                let customers = try await issuance.call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: "cus_year")).customers
                let licenses = try await issuance.call(IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customers.first?.id ?? "-")).licenses
                return try #require(licenses.first)
            }
            func webhooks() -> [String] { receiver.received.withLock { $0.map(\.type) } }
            func waitForWebhook(_ type: String, count: Int = 1) async -> Bool {
                await eventually(within: .seconds(30)) { webhooks().filter { $0 == type }.count >= count }
            }
            func waitForMail(_ count: Int) async -> Bool { await eventually(within: .seconds(30)) { smtp.messages.count >= count } }

            // Day 0: the purchase. The buyer's e-mail carries a link that reveals the key once.
            try await stripe("checkout.session.completed", [
                "id": "cs_year", "customer": "cus_year", "subscription": "sub_year", "payment_intent": "pi_year", "amount_total": 1900, "currency": "usd",
                "metadata": ["price_id": "price_monthly"], "customer_details": ["email": "buyer@acme.test", "name": "Acme Buyer"],
            ])
            var current = try await license()
            #expect(current.state == .active && current.expiresAt == start + 30 * Self.day)
            #expect(await waitForMail(1))
            let purchase = smtp.messages[0]
            #expect(purchase.contains("To: buyer@acme.test") && purchase.contains("Subject: Your CAD Pro license is ready"), "\(purchase.prefix(500))")
            let link = try #require(purchase.range(of: #"https://licenses\.vendor\.test/reveal/lmr_[A-Za-z0-9_-]+"#, options: .regularExpression))
            let token = String(purchase[link].split(separator: "/").last!)
            let revealed = try await issuance.call(IssuanceMethods.revealKey, RevealKeyRequest(token: token))
            #expect(revealed.licenseId == current.id && (try? LicenseKey(parsing: revealed.licenseKey)) != nil)
            #expect(!purchase.contains(revealed.licenseKey), "the key itself is never in an e-mail")
            #expect(await expectCode(.notFound) { _ = try await issuance.call(IssuanceMethods.revealKey, RevealKeyRequest(token: token)) } == nil, "a second reveal")
            let validation = try await stack.validation.call(ValidationMethods.validate, ValidateRequest(licenseKey: revealed.licenseKey))
            #expect(validation.reason == .valid)
            #expect(await waitForWebhook("license.issued"))

            // Day 28: the first renewal, paid by billing; nobody acts.
            at(28)
            try await invoicePaid("in_1", from: 30, to: 60)
            current = try await license()
            #expect(current.state == .active && current.expiresAt == start + 60 * Self.day)
            #expect(await waitForWebhook("subscription.paid"))
            #expect(await waitForWebhook("license.renewed"))

            // Day 58: the second renewal.
            at(58)
            try await invoicePaid("in_2", from: 60, to: 90)
            #expect(try await license().expiresAt == start + 90 * Self.day)
            #expect(await waitForWebhook("subscription.paid", count: 2))

            // Day 89: the one-day reminder for the day-90 end, by e-mail and webhook.
            at(89, plus: 3600)
            #expect(await waitForMail(2), "\(smtp.messages.count) messages")
            #expect(smtp.messages[1].contains("expires in 1 day") && smtp.messages[1].contains("https://shop.vendor.test/renew/\(current.id)"))
            #expect(await waitForWebhook("license.expiring"))

            // Day 90: the payment fails: past due, the license in grace for seven days.
            at(90, plus: 7200)
            try await stripe("invoice.payment_failed", ["id": "in_3", "subscription": "sub_year"])
            current = try await license()
            #expect(current.state == .inGrace, "\(current.state)")
            #expect(await waitForWebhook("subscription.payment_failed"))
            #expect(await waitForWebhook("license.in_grace"))
            #expect(await waitForMail(3), "\(smtp.messages.count) messages")
            #expect(smtp.messages[2].contains("grace period until"), "\(smtp.messages[2].prefix(600))")
            #expect(try await stack.validation.call(ValidationMethods.validate, ValidateRequest(licenseKey: revealed.licenseKey)).reason == .inGrace)

            // Day 92: the customer pays after all; the license is active again until day 120.
            at(92)
            try await invoicePaid("in_3", from: 90, to: 120)
            current = try await license()
            #expect(current.state == .active && current.expiresAt == start + 120 * Self.day, "\(current.state) \(current.expiresAt)")
            #expect(await waitForWebhook("subscription.paid", count: 3))
            let subscription = try await issuance.call(IssuanceMethods.getSubscription, GetByIdRequest(id: current.id))
            #expect(subscription.status == .active)

            // Day 100: the subscription is canceled: the license stops at once.
            at(100)
            try await stripe("customer.subscription.deleted", ["id": "sub_year"])
            current = try await license()
            #expect(current.state == .expired, "\(current.state)")
            #expect(await waitForWebhook("subscription.canceled"))
            #expect(try await issuance.call(IssuanceMethods.getSubscription, GetByIdRequest(id: current.id)).status == .canceled)
            #expect(await eventually {
                (try? await stack.validation.call(ValidationMethods.validate, ValidateRequest(licenseKey: revealed.licenseKey)))?.reason == .expired
            })

            // The customer is told the license has ended, once; the rest of the year sends
            // nothing more and renews nothing.
            #expect(await waitForMail(4), "\(smtp.messages.count) messages")
            #expect(smtp.messages[3].contains("Subject: Your CAD Pro license has ended\n") || smtp.messages[3].contains("Subject: Your CAD Pro license has ended\r"),
                    "\(smtp.messages[3].prefix(600))")
            at(365)
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await license().state == .expired)
            #expect(smtp.messages.count == 4, "\(smtp.messages.count - 4) e-mails after the end")
            #expect(webhooks().filter { $0 == "license.renewed" }.count == 3, "\(webhooks())")
            // Every webhook was signed, and none carries the key.
            for delivery in receiver.received.withLock({ $0 }) {
                #expect(delivery.signature.hasPrefix("t=") && !String(decoding: delivery.body, as: UTF8.self).contains(revealed.licenseKey))
            }
        }
    }

    /// When the SMTP server cannot be reached, the buyer's e-mail is retried and health
    /// says so (DEGRADED, with the error), instead of failing silently.
    @Test func undeliverableEMailsShowInHealth() async throws {
        let clock = ManualLicenseClock(1_800_000_000)
        try await IntegrationsStack.run(clock: clock) { options in
            // Nothing listens on port 9 (discard) on a test machine's loopback.
            options.smtp = SMTPMailer.Settings(host: "127.0.0.1", port: 9, startTLS: false, from: "licenses@vendor.test")
            options.keyMailInterval = .milliseconds(50)
        } _: { world in
            let (policy, _) = try await seedCatalogue(world.stack.issuance, type: .subscription, duration: 30 * Self.day)
            _ = try await world.integrations.call(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: "stripe", secret: "whsec_health_secret_01"))
            _ = try await world.integrations.call(IntegrationsMethods.mapPrice, MapPriceRequest(priceId: "price_h", policyId: policy))
            #expect(try await world.integrations.call(HealthMethods.check, HealthCheckRequest()).status == .serving)
            let (status, text) = try await world.post("/webhooks/stripe/default", [
                "id": "evt_h", "type": "checkout.session.completed",
                "data": ["object": ["id": "cs_h", "customer": "cus_h", "subscription": "sub_h", "metadata": ["price_id": "price_h"],
                                    "customer_details": ["email": "buyer@h.test"]]],
            ], secret: "whsec_health_secret_01")
            #expect(status == 200, "\(text)")
            var health = HealthCheckResponse()
            #expect(await eventually(within: .seconds(30)) {
                health = (try? await world.integrations.call(HealthMethods.check, HealthCheckRequest())) ?? health
                return health.status == .degraded
            })
            #expect(health.problems.contains { $0.contains("key-reveal e-mail(s) to buyers could not be sent") }, "\(health.problems)")
        }
    }
}
