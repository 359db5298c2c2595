import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging

/// Inbound webhooks: billing in Stripe's format, CRM and ERP in this project's generic one
/// (README, "Webhooks"). Each is checked (signature over the raw body, timestamp, size,
/// JSON, event type), applied once by the provider's event id — the calls to issuance carry
/// the event id as their idempotency key, so a crash between the call and the record
/// cannot apply it twice — and answered with a status and a reason.
struct Inbound: Sendable {
    let database: DatabasePool
    let issuance: RPCClient
    let clock: any LicenseClock
    let logger: Logger

    static let sources = ["stripe", "crm", "erp"]
    static let maxBody = 1 << 20

    struct Answer: Sendable, Equatable {
        let status: Int
        let message: String
    }

    static let stripeTypes = [
        "checkout.session.completed", "invoice.paid", "invoice.payment_failed", "customer.subscription.deleted", "customer.subscription.updated",
        "charge.refunded",
    ]
    static let genericTypes = ["crm": ["customer.created", "customer.updated", "deal.won"], "erp": ["department.created", "department.updated"]]

    /// An applied event's outcome: stored, answered 200.
    enum Outcome {
        case applied(String)
        /// Names something this system does not know: stored and answered 200 with a
        /// warning logged, so the provider does not retry it for ever.
        case unknownObject(String)
    }

    /// Bad input: answered 4xx, nothing changed, nothing stored (a corrected event with a
    /// new id can follow).
    struct Rejection: Error {
        let status: Int
        let message: String
    }

    func handle(source: String, tenant: String, signature: String?, body: [UInt8]) async -> Answer {
        guard Self.sources.contains(source) else { return Answer(status: 404, message: "no webhook source \(source); sources: stripe, crm, erp") }
        guard tenant.count <= 64, !tenant.isEmpty, tenant.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            return Answer(status: 404, message: "the tenant in the path is not one this service knows")
        }
        let now = clock.now
        do {
            let secrets = try await database.read { db in
                try String.fetchAll(
                    db, sql: "SELECT secret FROM inbound_secret WHERE tenant_id = ? AND source = ? AND (valid_until = 0 OR valid_until > ?)",
                    arguments: [tenant, source, now])
            }
            guard !secrets.isEmpty else {
                return Answer(status: 404, message: "\(source) webhooks of tenant \(tenant) have no signing secret; set one with licensectl integration secret rotate --source \(source)")
            }
            do {
                try WebhookSignature.verify(header: signature, body: body, secrets: secrets, now: now)
            } catch {
                return Answer(status: 401, message: "\(error)")
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
                return Answer(status: 400, message: "the body is not a JSON object")
            }
            guard let id = object["id"] as? String, !id.isEmpty, id.count <= 200, let type = object["type"] as? String else {
                return Answer(status: 400, message: "the event has no id or type")
            }
            let known = source == "stripe" ? Self.stripeTypes : Self.genericTypes[source] ?? []
            guard known.contains(type) else {
                return Answer(status: 400, message: "unknown event type \(type.prefix(80)); \(source) events taken: \(known.joined(separator: ", "))")
            }
            if let previous = try await database.read({ db in
                try Row.fetchOne(db, sql: "SELECT outcome, detail FROM inbound_event WHERE tenant_id = ? AND source = ? AND event_id = ?", arguments: [tenant, source, id])
            }) {
                return Answer(status: 200, message: "event \(id) was applied before (\(previous["outcome"] as String): \(previous["detail"] as String)); not again")
            }
            let data = (object["data"] as? [String: Any]) ?? [:]
            let outcome: Outcome
            let context = Call(issuance: issuance, tenant: tenant, key: "\(source):\(id)")
            if source == "stripe" {
                outcome = try await stripe(type, (data["object"] as? [String: Any]) ?? [:], context)
            } else {
                outcome = try await generic(type, data, context)
            }
            let (name, detail): (String, String)
            switch outcome {
            case .applied(let text): (name, detail) = ("applied", text)
            case .unknownObject(let text):
                (name, detail) = ("unknown-object", text)
                logger.warning("webhook event names something unknown; stored, not applied", metadata: [
                    "source": "\(source)", "event": "\(id)", "type": "\(type)", "detail": "\(text)",
                ])
            }
            try await database.write { db in
                try db.execute(
                    sql: "INSERT OR IGNORE INTO inbound_event (tenant_id, source, event_id, type, received_at, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    arguments: [tenant, source, id, type, now, name, detail])
            }
            return Answer(status: 200, message: detail)
        } catch let rejection as Rejection {
            return Answer(status: rejection.status, message: rejection.message)
        } catch let error as RPCError where error.code == .invalidArgument || error.code == .failedPrecondition || error.code == .alreadyExists {
            // Issuance refuses what the event asks (it will refuse it again): 422 with why.
            return Answer(status: 422, message: "license-issuance refused the event: \(error.message)")
        } catch let error as RPCError where error.code == .unavailable || error.code == .deadlineExceeded {
            return Answer(status: 503, message: "license-issuance cannot be reached; send the event again later (it will be applied once)")
        } catch {
            logger.error("webhook event failed", metadata: ["source": "\(source)", "error": "\(error)"])
            return Answer(status: 500, message: "the event could not be applied; send it again later (it will be applied once)")
        }
    }

    /// Calls to issuance for one event: in the event's tenant, keyed by the event id.
    struct Call: Sendable {
        let issuance: RPCClient
        let tenant: String
        let key: String

        func callAsFunction<Request, Response>(_ method: WireMethod<Request, Response>, _ request: Request, step: String = "") async throws -> Response {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.tenant] = tenant
            metadata[RPCMetadata.actor] = "integrations"
            metadata[RPCMetadata.idempotencyKey] = step.isEmpty ? key : "\(key):\(step)"
            return try await issuance.call(method, request, metadata: metadata, timeout: .seconds(10))
        }
    }

    // MARK: Stripe

    private func stripe(_ type: String, _ object: [String: Any], _ call: Call) async throws -> Outcome {
        func string(_ key: String) -> String { (object[key] as? String) ?? "" }
        func number(_ key: String) -> Int64 { (object[key] as? NSNumber)?.int64Value ?? 0 }
        switch type {
        case "checkout.session.completed":
            let metadata = object["metadata"] as? [String: Any]
            let lineItems = ((object["line_items"] as? [String: Any])?["data"] as? [[String: Any]])?.first
            let price = (metadata?["price_id"] as? String) ?? ((lineItems?["price"] as? [String: Any])?["id"] as? String) ?? ""
            guard !price.isEmpty else {
                throw Rejection(status: 400, message: "the checkout session names no price: put it in metadata.price_id, or expand line_items")
            }
            let policy = try await database.read { db in
                try String.fetchOne(db, sql: "SELECT policy_id FROM price_mapping WHERE tenant_id = ? AND price_id = ?", arguments: [call.tenant, price])
            }
            guard let policy else { return .unknownObject("no policy is mapped to price \(price); map it with licensectl integration map-price") }
            let details = object["customer_details"] as? [String: Any]
            let customer = try await call(
                IssuanceMethods.createCustomer,
                CreateCustomerRequest(name: (details?["name"] as? String) ?? (details?["email"] as? String) ?? "Stripe customer", email: (details?["email"] as? String) ?? "",
                                      crmId: string("customer")),
                step: "customer")
            let subscription = string("subscription")
            let issued = try await call(
                IssuanceMethods.issueLicense,
                IssueLicenseRequest(
                    policyId: policy, customerId: customer.id, billingRef: subscription, amountMinor: number("amount_total"),
                    currency: string("currency").uppercased(), sealKeyForReveal: true),
                step: "license")
            // Issuance keeps the key sealed; the buyer gets a link that reveals it once.
            let license = issued.license?.id ?? ""
            try await remember([string("payment_intent"), subscription, string("id")], license: license, tenant: call.tenant)
            try await KeyMails.enqueue(
                license: license, tenant: call.tenant, customer: customer.id, product: issued.license?.productId ?? "", token: issued.revealToken,
                expiresAt: issued.revealExpiresAt, now: clock.now, in: database)
            return .applied("license \(license) issued under policy \(policy) to customer \(customer.id)")
        case "invoice.paid":
            let subscription = string("subscription")
            guard !subscription.isEmpty else { return .unknownObject("invoice \(string("id")) belongs to no subscription") }
            let line = ((object["lines"] as? [String: Any])?["data"] as? [[String: Any]])?.first?["period"] as? [String: Any]
            let start = (line?["start"] as? NSNumber)?.int64Value ?? number("period_start")
            let end = (line?["end"] as? NSNumber)?.int64Value ?? number("period_end")
            do {
                let paid = try await call(
                    IssuanceMethods.recordPayment,
                    RecordPaymentRequest(
                        billingRef: subscription, periodStart: start, periodEnd: end, amountMinor: number("amount_paid"), currency: string("currency").uppercased(),
                        paymentId: string("id")))
                try await remember([string("id"), string("charge"), string("payment_intent")], license: paid.licenseId, tenant: call.tenant)
                return .applied("payment of invoice \(string("id")) recorded; subscription \(paid.id) paid until \(ISODate.format(paid.periodEnd))")
            } catch let error as RPCError where error.code == .notFound {
                return .unknownObject("no subscription has billing reference \(subscription)")
            }
        case "invoice.payment_failed":
            do {
                let failed = try await call(
                    IssuanceMethods.recordPaymentFailure,
                    RecordPaymentFailureRequest(billingRef: string("subscription"), reason: "invoice \(string("id")): payment failed"))
                return .applied("subscription \(failed.id) is past due; its license has its grace period")
            } catch let error as RPCError where error.code == .notFound {
                return .unknownObject("no subscription has billing reference \(string("subscription"))")
            }
        case "customer.subscription.deleted", "customer.subscription.updated":
            let atPeriodEnd = (object["cancel_at_period_end"] as? Bool) ?? false
            if type == "customer.subscription.updated", !atPeriodEnd { return .applied("nothing to change: the subscription is not being canceled") }
            do {
                let canceled = try await call(
                    IssuanceMethods.cancelSubscription, CancelSubscriptionRequest(billingRef: string("id"), immediately: type == "customer.subscription.deleted"))
                return .applied("subscription \(canceled.id) canceled" + (type == "customer.subscription.deleted" ? " now" : " at the end of its period"))
            } catch let error as RPCError where error.code == .notFound {
                return .unknownObject("no subscription has billing reference \(string("id"))")
            }
        case "charge.refunded":
            let references = [string("invoice"), string("payment_intent"), string("id")].filter { !$0.isEmpty }
            let license = try await database.read { db in
                try references.lazy.compactMap {
                    try String.fetchOne(db, sql: "SELECT license_id FROM payment_ref WHERE tenant_id = ? AND reference = ?", arguments: [call.tenant, $0])
                }.first
            }
            guard let license else { return .unknownObject("charge \(string("id")) paid for no license this service knows") }
            _ = try await call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: license, reason: "payment refunded (charge \(string("id")))"))
            return .applied("license \(license) revoked: its payment was refunded")
        default:
            throw Rejection(status: 400, message: "unknown event type \(type)")
        }
    }

    private func remember(_ references: [String], license: String, tenant: String) async throws {
        guard !license.isEmpty else { return }
        try await database.write { db in
            for reference in references where !reference.isEmpty {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO payment_ref (tenant_id, reference, license_id) VALUES (?, ?, ?)", arguments: [tenant, reference, license])
            }
        }
    }

    // MARK: CRM and ERP

    private func generic(_ type: String, _ data: [String: Any], _ call: Call) async throws -> Outcome {
        func string(_ key: String) throws -> String {
            guard let value = data[key] as? String, !value.isEmpty, value.count <= 200 else {
                throw Rejection(status: 400, message: "data.\(key) is required (a string of at most 200 characters)")
            }
            return value
        }
        func customer(external: String) async throws -> Customer? {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.tenant] = call.tenant
            return try await call.issuance.call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: external), metadata: metadata, timeout: .seconds(10))
                .customers.first
        }
        switch type {
        case "customer.created", "customer.updated":
            let external = try string("external_id")
            let name = try string("name")
            let email = (data["email"] as? String) ?? ""
            if let existing = try await customer(external: external) {
                let updated = try await call(IssuanceMethods.updateCustomer, UpdateCustomerRequest(id: existing.id, name: name, email: email, crmId: external))
                return .applied("customer \(updated.id) updated from CRM record \(external)")
            }
            let created = try await call(
                IssuanceMethods.createCustomer,
                CreateCustomerRequest(name: name, email: email, crmId: external, enterprise: (data["enterprise"] as? Bool) ?? false))
            return .applied("customer \(created.id) created from CRM record \(external)")
        case "deal.won":
            let external = try string("customer_external_id")
            let quantity = (data["quantity"] as? NSNumber)?.intValue ?? 1
            guard (1...1000).contains(quantity) else { throw Rejection(status: 400, message: "data.quantity must be between 1 and 1000") }
            var policy = (data["policy_id"] as? String) ?? ""
            if policy.isEmpty, let price = data["price_id"] as? String {
                policy = try await database.read { db in
                    try String.fetchOne(db, sql: "SELECT policy_id FROM price_mapping WHERE tenant_id = ? AND price_id = ?", arguments: [call.tenant, price])
                } ?? ""
            }
            guard !policy.isEmpty else { throw Rejection(status: 400, message: "data.policy_id (or a mapped data.price_id) is required") }
            guard let owner = try await customer(external: external) else {
                return .unknownObject("no customer has CRM id \(external); send customer.created first")
            }
            var licenses: [String] = []
            for index in 0..<quantity {
                let issued = try await call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: owner.id), step: "license-\(index)")
                licenses.append(issued.license?.id ?? "")
            }
            return .applied("\(quantity) license(s) issued to customer \(owner.id): \(licenses.joined(separator: ", "))")
        case "department.created":
            let external = try string("customer_external_id")
            guard let owner = try await customer(external: external) else {
                return .unknownObject("no customer has CRM id \(external)")
            }
            let department = try await call(
                IssuanceMethods.createDepartment,
                CreateDepartmentRequest(
                    customerId: owner.id, name: try string("name"), costCenter: (data["cost_center"] as? String) ?? "",
                    maxSeats: UInt32(clamping: (data["max_seats"] as? NSNumber)?.intValue ?? 0),
                    maxMachines: UInt32(clamping: (data["max_machines"] as? NSNumber)?.intValue ?? 0)))
            return .applied("department \(department.id) created for customer \(owner.id)")
        case "department.updated":
            let external = try string("customer_external_id")
            guard let owner = try await customer(external: external) else {
                return .unknownObject("no customer has CRM id \(external)")
            }
            let limits = data["max_seats"] != nil || data["max_machines"] != nil
            do {
                let department = try await call(
                    IssuanceMethods.updateDepartment,
                    UpdateDepartmentRequest(
                        customerId: owner.id, name: try string("name"), newName: (data["new_name"] as? String) ?? "", costCenter: (data["cost_center"] as? String) ?? "",
                        maxSeats: UInt32(clamping: (data["max_seats"] as? NSNumber)?.intValue ?? 0),
                        maxMachines: UInt32(clamping: (data["max_machines"] as? NSNumber)?.intValue ?? 0), updateLimits: limits))
                return .applied("department \(department.id) of customer \(owner.id) updated")
            } catch let error as RPCError where error.code == .notFound {
                return .unknownObject(error.message)
            }
        default:
            throw Rejection(status: 400, message: "unknown event type \(type)")
        }
    }
}
