import Foundation
import GRDB
import LicensingCore
import LicensingRuntime
import LicensingWire

/// What the system did, as webhook events: built from the feeds integrations follows and
/// written to the outbox with the feed position in one transaction, each with a delivery
/// per endpoint of its tenant that takes its type. An event's id comes from its feed
/// position, so a page applied twice (it never is) could not send an event twice either.
/// Events carry ids (license, customer, product), never key text or personal data.
enum Outbox {
    static let eventTypes: [String] = [
        "license.issued", "license.renewed", "license.in_grace", "license.expired", "license.suspended", "license.reinstated",
        "license.revoked", "subscription.paid", "subscription.payment_failed", "subscription.canceled", "machine.activated",
        "machine.deactivated", "alert.raised", "license.expiring",
    ]

    /// Issuance's actions that are webhook events, and their names.
    static let issuanceTypes: [String: String] = [
        "license.issued": "license.issued", "license.renewed": "license.renewed", "license.grace_started": "license.in_grace",
        "license.expired": "license.expired", "license.suspended": "license.suspended", "license.reinstated": "license.reinstated",
        "license.revoked": "license.revoked", "subscription.paid": "subscription.paid", "subscription.past_due": "subscription.payment_failed",
        "subscription.canceled": "subscription.canceled",
    ]

    struct Event {
        let id: String
        let tenant: String
        let type: String
        let customer: String
        let data: [String: Any]
        let at: Int64
    }

    /// Issuance's changes: licenses are remembered (tenant, customer) for the subscription
    /// events that name only a license; the events go to the outbox.
    /// `epoch`: the feed's epoch, part of each event's id (a restored issuance reuses sequence
    /// numbers). Events up to `silentThrough` update what is remembered but are not sent.
    static func apply(issuance changes: [ChangeEvent], epoch: String = "", silentThrough: UInt64 = 0, now: Int64, in db: Database) throws {
        for change in changes {
            guard case .license(let license)? = change.subject else { continue }
            try db.execute(
                sql: """
                    INSERT INTO license_ref (license_id, tenant_id, customer_id, policy_id, product_id, state, expires_at, grace_seconds, features)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(license_id) DO UPDATE SET tenant_id = excluded.tenant_id, customer_id = excluded.customer_id,
                        policy_id = excluded.policy_id, product_id = excluded.product_id, state = excluded.state, expires_at = excluded.expires_at,
                        grace_seconds = excluded.grace_seconds, features = excluded.features
                    """,
                arguments: [
                    license.id, license.tenantId, license.customerId, license.policyId, license.productId, license.state.rawValue, license.expiresAt,
                    license.graceSeconds, license.features.joined(separator: ","),
                ])
        }
        try write(try events(issuance: changes.filter { $0.seq > silentThrough }, epoch: epoch, in: db), now: now, in: db)
    }

    /// The webhook a change is, if any. A failed payment that moves the license into grace
    /// (or past it) is that state's event: the receiver hears of grace however it began.
    static func type(of change: ChangeEvent) -> String? {
        if change.action == "license.payment_failed", case .license(let license)? = change.subject {
            switch license.state {
            case .inGrace: return "license.in_grace"
            case .expired: return "license.expired"
            default: return nil
            }
        }
        return issuanceTypes[change.action]
    }

    static func events(issuance changes: [ChangeEvent], epoch: String = "", in db: Database) throws -> [Event] {
        // Ids carry the feed's epoch: a restored issuance reuses sequence numbers. (Events
        // written before epochs existed keep their ids of the sequence alone.)
        func eventID(_ seq: UInt64) -> String { epoch.isEmpty ? "evt_iss_\(seq)" : "evt_iss_\(epoch.prefix(8))_\(seq)" }
        return try changes.compactMap { change -> Event? in
            guard let type = type(of: change) else { return nil }
            switch change.subject {
            case .license(let license)?:
                var data: [String: Any] = [
                    "license_id": license.id, "customer_id": license.customerId, "product_id": license.productId, "policy_id": license.policyId,
                    "state": license.state.description, "expires_at": license.expiresAt == 0 ? NSNull() : ISODate.format(license.expiresAt) as Any,
                ]
                if !license.stateReason.isEmpty { data["reason"] = license.stateReason }
                return Event(id: eventID(change.seq), tenant: license.tenantId, type: type, customer: license.customerId, data: data, at: change.occurredAt)
            case .subscription(let subscription)?:
                let owner = try Row.fetchOne(db, sql: "SELECT tenant_id, customer_id FROM license_ref WHERE license_id = ?", arguments: [subscription.licenseId])
                let data: [String: Any] = [
                    "subscription_id": subscription.id, "license_id": subscription.licenseId, "billing_ref": subscription.billingRef,
                    "status": subscription.status.description, "period_end": ISODate.format(subscription.periodEnd),
                    "amount_minor": subscription.amountMinor, "currency": subscription.currency,
                ]
                return Event(
                    id: eventID(change.seq), tenant: owner?["tenant_id"] ?? "default", type: type, customer: owner?["customer_id"] ?? "", data: data,
                    at: change.occurredAt)
            default:
                return nil
            }
        }
    }

    static func events(validation events: [ValidationEvent]) -> [Event] {
        events.compactMap { event in
            guard case .machine(let machine)? = event.event else { return nil }
            return Event(
                id: "evt_val_\(event.seq)", tenant: event.tenantId, type: machine.activated ? "machine.activated" : "machine.deactivated", customer: "",
                data: ["license_id": event.licenseId, "machine_id": machine.machineId, "machines_active": Int(machine.machinesActive)], at: event.occurredAt)
        }
    }

    /// Alerts as they are first seen open (later updates of the same alert are not events).
    static func events(usage events: [UsageFeedEvent], seen: (String) throws -> Bool) rethrows -> [Event] {
        try events.compactMap { event in
            guard case .alert(let alert)? = event.event, !alert.acknowledged, try !seen("evt_alert_\(alert.id)") else { return nil }
            return Event(
                id: "evt_alert_\(alert.id)", tenant: event.tenantId, type: "alert.raised", customer: "",
                data: [
                    "alert_id": alert.id, "license_id": alert.licenseId, "rule": alert.rule, "detail": alert.detail,
                    "first_seen_at": ISODate.format(alert.raisedAt), "count": Int(clamping: alert.count),
                ],
                at: event.occurredAt)
        }
    }

    /// Writes events to the outbox (once each) with a delivery per endpoint that takes them.
    static func write(_ events: [Event], now: Int64, in db: Database) throws {
        for event in events {
            let tenant = event.tenant
            let body: [String: Any] = ["id": event.id, "type": event.type, "created": ISODate.format(event.at), "tenant": tenant, "data": event.data]
            let payload = String(decoding: try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]), as: UTF8.self)
            try db.execute(
                sql: "INSERT OR IGNORE INTO outbox (event_id, tenant_id, type, customer_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [event.id, tenant, event.type, event.customer, payload, now])
            guard db.changesCount > 0 else { continue }
            let seq = db.lastInsertedRowID
            for endpoint in try Row.fetchAll(
                db, sql: "SELECT id, event_types FROM webhook_endpoint WHERE tenant_id = ? AND deleted = 0 AND disabled_reason = ''", arguments: [tenant])
            {
                let types: String = endpoint["event_types"]
                guard types.isEmpty || types.split(separator: ",").contains(where: { $0 == event.type }) else { continue }
                try db.execute(
                    sql: "INSERT INTO delivery (id, outbox_seq, endpoint_id, status, next_attempt_at, created_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                    arguments: [EntityID.make("dlv"), seq, endpoint["id"] as String, now, now])
            }
        }
    }
}
