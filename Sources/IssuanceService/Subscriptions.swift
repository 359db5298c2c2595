import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Subscriptions tie a license to the billing system's periods: a paid period extends the
// license, a failed payment starts its grace period, a cancellation ends it at the end
// of the paid period (or at once).

enum Subscriptions {
    static func insert(_ subscription: Subscription, tenant: String, in db: Database) throws {
        if try byBillingRef(subscription.billingRef, tenant: tenant).fetchCount(db) > 0 {
            throw RPCError.alreadyExists("billing_ref \(subscription.billingRef) already belongs to a subscription")
        }
        try SubscriptionRecord(subscription, tenant: tenant).insert(db)
    }

    static func require(billingRef: String, tenant: String, in db: Database) throws -> Subscription {
        guard let subscription = try byBillingRef(billingRef, tenant: tenant).fetchOne(db)?.message else {
            throw RPCError.notFound("no subscription has billing_ref \(billingRef)")
        }
        return subscription
    }

    static func save(_ subscription: Subscription, tenant: String, action: String, at now: Int64, in db: Database) throws {
        try SubscriptionRecord(subscription, tenant: tenant).update(db)
        try ChangeFeed.append(ChangeEvent(action: action, .subscription(subscription)), at: now, in: db)
    }

    private static func byBillingRef(_ billingRef: String, tenant: String) -> QueryInterfaceRequest<SubscriptionRecord> {
        SubscriptionRecord.owned(by: tenant).filter(Column("billing_ref") == billingRef)
    }
}

extension IssuanceService {
    /// By subscription id or by the id of its license.
    public func getSubscription(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Subscription {
        try Check.nonEmpty(request.id, "id")
        let found = try await database.read { db in
            try SubscriptionRecord.owned(by: self.tenant(call))
                .filter(Column("id") == request.id || Column("license_id") == request.id).fetchOne(db)?.message
        }
        guard let found else { throw RPCError.notFound("no subscription \(request.id)") }
        return found
    }

    /// A paid period: extends the license to the period's end. A payment id already
    /// recorded changes nothing, so billing may deliver the same event twice.
    public func recordPayment(_ request: RecordPaymentRequest, _ call: ServerCall) async throws -> Subscription {
        try Check.nonEmpty(request.billingRef, "billing_ref")
        try Check.nonEmpty(request.paymentId, "payment_id")
        try Check.length(request.paymentId, "payment_id")
        try Check.nonNegative(request.amountMinor, "amount_minor")
        guard request.periodEnd > request.periodStart, request.periodStart > 0 else {
            throw RPCError.invalidArgument("period_end must be after period_start, and both set")
        }
        return try await mutate(call, action: "subscription.record_payment", target: \.id) { db, context -> Mutation<Subscription> in
            var subscription = try Subscriptions.require(billingRef: request.billingRef, tenant: context.tenant, in: db)
            // Billing may deliver the same payment twice: the repeat changes nothing, audit included.
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM payment WHERE tenant_id = ? AND payment_id = ?", arguments: [context.tenant, request.paymentId]) == true {
                return .unchanged(subscription)
            }
            guard subscription.status != .canceled else {
                throw RPCError.failedPrecondition("subscription \(subscription.id) is canceled; start a new one")
            }
            var record = try StoredLicense.require(db, id: subscription.licenseId, tenant: context.tenant, vault: self.vault)
            if record.license.state == .revoked {
                throw RPCError.failedPrecondition("license \(record.license.id) of subscription \(subscription.id) is revoked")
            }
            try db.execute(
                sql: """
                    INSERT INTO payment (payment_id, tenant_id, subscription_id, period_start, period_end, amount_minor, currency, recorded_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [request.paymentId, context.tenant, subscription.id, request.periodStart, request.periodEnd, request.amountMinor, request.currency, context.now])
            if request.periodEnd > subscription.periodEnd {
                subscription.periodStart = request.periodStart
                subscription.periodEnd = request.periodEnd
            }
            subscription.status = .active
            subscription.amountMinor = request.amountMinor
            if !request.currency.isEmpty { subscription.currency = request.currency }
            try Subscriptions.save(subscription, tenant: context.tenant, action: "subscription.paid", at: context.now, in: db)
            // A payment clears an earlier failure.
            let clearsFailure = record.license.stateReason.hasPrefix(Self.paymentFailed)
            if request.periodEnd > record.license.expiresAt || record.effectiveState(at: context.now) != .active || clearsFailure {
                record.license.expiresAt = max(record.license.expiresAt, request.periodEnd)
                if record.license.state != .suspended { record.license.state = .active }
                if clearsFailure { record.license.stateReason = "" }
                _ = try record.save(action: "license.renewed", at: context.now, in: db)
            }
            return .changed(subscription)
        }
    }

    /// The reason a license shows while a renewal payment has failed.
    static let paymentFailed = "payment failed"

    /// A failed renewal payment: the subscription is past due; the period already paid for
    /// stays the license's, and grace starts at its end (or now, if it has already ended).
    public func recordPaymentFailure(_ request: RecordPaymentFailureRequest, _ call: ServerCall) async throws -> Subscription {
        try Check.nonEmpty(request.billingRef, "billing_ref")
        try Check.length(request.reason, "reason", max: 500)
        return try await mutate(call, action: "subscription.record_payment_failure", target: \.id) { db, context in
            var subscription = try Subscriptions.require(billingRef: request.billingRef, tenant: context.tenant, in: db)
            guard subscription.status != .canceled else {
                throw RPCError.failedPrecondition("subscription \(subscription.id) is canceled")
            }
            subscription.status = .pastDue
            try Subscriptions.save(subscription, tenant: context.tenant, action: "subscription.past_due", at: context.now, in: db)
            var record = try StoredLicense.require(db, id: subscription.licenseId, tenant: context.tenant, vault: self.vault)
            if record.license.state != .revoked, record.license.state != .suspended {
                if record.license.expiresAt != 0, record.license.expiresAt < context.now {
                    // The period has ended: grace runs from the failure.
                    record.license.expiresAt = context.now
                }
                record.license.state = record.stateByTime(at: context.now)
                record.license.stateReason = request.reason.isEmpty ? Self.paymentFailed : "\(Self.paymentFailed): \(request.reason)"
                _ = try record.save(action: "license.payment_failed", at: context.now, in: db)
            }
            return subscription
        }
    }

    /// Cancels renewal: the license runs to the end of the paid period, or stops now with
    /// no grace when `immediately` is set.
    public func cancelSubscription(_ request: CancelSubscriptionRequest, _ call: ServerCall) async throws -> Subscription {
        try Check.nonEmpty(request.billingRef, "billing_ref")
        return try await mutate(call, action: "subscription.cancel", target: \.id) { db, context in
            var subscription = try Subscriptions.require(billingRef: request.billingRef, tenant: context.tenant, in: db)
            guard subscription.status != .canceled else {
                throw RPCError.failedPrecondition("subscription \(subscription.id) is already canceled")
            }
            subscription.status = .canceled
            subscription.autoRenew = false
            try Subscriptions.save(subscription, tenant: context.tenant, action: "subscription.canceled", at: context.now, in: db)
            var record = try StoredLicense.require(db, id: subscription.licenseId, tenant: context.tenant, vault: self.vault)
            guard record.license.state != .revoked else { return subscription }
            if request.immediately {
                record.license.expiresAt = min(max(record.license.startsAt + 1, context.now), record.license.expiresAt)
                record.license.graceSeconds = 0
                record.license.state = .expired
                record.license.stateReason = "subscription canceled"
                _ = try record.save(action: "license.expired", at: context.now, in: db)
            } else if record.license.expiresAt > subscription.periodEnd {
                record.license.expiresAt = subscription.periodEnd
                _ = try record.save(action: "license.changed", at: context.now, in: db)
            }
            return subscription
        }
    }
}
