import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// What operators manage, through the gateway: outbound endpoints and their deliveries,
// price → policy mappings, the secrets inbound webhooks are signed with. Everything is
// scoped to the caller's tenant.

extension IntegrationsService {
    public func createWebhookEndpoint(_ request: CreateWebhookEndpointRequest, _ call: ServerCall) async throws -> CreateWebhookEndpointResponse {
        let url: URL
        do {
            url = try AddressPolicy.check(url: request.url)
        } catch {
            throw RPCError.invalidArgument("url: \(error)")
        }
        if !options.allowPrivateAddresses {
            do {
                _ = try AddressPolicy(allowPrivate: false).address(for: url.host!)
            } catch {
                throw RPCError.invalidArgument("url: \(error)")
            }
        }
        let unknown = request.eventTypes.filter { !Outbox.eventTypes.contains($0) }
        guard unknown.isEmpty else {
            throw RPCError.invalidArgument("no event type \(unknown[0].prefix(60)); types: \(Outbox.eventTypes.joined(separator: ", "))")
        }
        let endpoint = WebhookEndpoint(
            id: EntityID.make("whe"), url: request.url, eventTypes: request.eventTypes, createdAt: clock.now, tenantId: tenant(call))
        let secret = WebhookSignature.newSecret(prefix: "whsec_")
        try await database.write { db in
            let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM webhook_endpoint WHERE tenant_id = ? AND deleted = 0", arguments: [endpoint.tenantId]) ?? 0
            guard count < 50 else { throw RPCError(.resourceExhausted, "a tenant has at most 50 webhook endpoints; delete one first") }
            try db.execute(
                sql: "INSERT INTO webhook_endpoint (id, tenant_id, url, event_types, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [endpoint.id, endpoint.tenantId, endpoint.url, endpoint.eventTypes.joined(separator: ","), secret, endpoint.createdAt])
        }
        return CreateWebhookEndpointResponse(endpoint: endpoint, secret: secret)
    }

    public func listWebhookEndpoints(_ request: ListWebhookEndpointsRequest, _ call: ServerCall) async throws -> ListWebhookEndpointsResponse {
        let tenant = tenant(call)
        return ListWebhookEndpointsResponse(endpoints: try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM webhook_endpoint WHERE tenant_id = ? AND deleted = 0 ORDER BY created_at, id", arguments: [tenant])
                .map(Self.endpoint)
        })
    }

    public func deleteWebhookEndpoint(_ request: GetByIdRequest, _ call: ServerCall) async throws -> WebhookEndpoint {
        let tenant = tenant(call)
        let endpoint = try await database.write { db -> WebhookEndpoint? in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM webhook_endpoint WHERE id = ? AND tenant_id = ? AND deleted = 0", arguments: [request.id, tenant]) else {
                return nil
            }
            try db.execute(sql: "UPDATE webhook_endpoint SET deleted = 1 WHERE id = ?", arguments: [request.id])
            try db.execute(
                sql: "UPDATE delivery SET status = 'failed', last_error = 'the endpoint was deleted' WHERE endpoint_id = ? AND status IN ('pending', 'retrying')",
                arguments: [request.id])
            return Self.endpoint(row)
        }
        guard let endpoint else { throw RPCError.notFound("no webhook endpoint \(RPCError.quoted(request.id, limit: 40))") }
        return endpoint
    }

    public func listDeliveries(_ request: ListDeliveriesRequest, _ call: ServerCall) async throws -> ListDeliveriesResponse {
        guard ["", "pending", "retrying", "delivered", "failed"].contains(request.status) else {
            throw RPCError.invalidArgument("status is pending, retrying, delivered or failed")
        }
        let tenant = tenant(call)
        let size = request.page == nil || request.page!.pageSize == 0 ? 100 : min(Int(request.page!.pageSize), 1000)
        let before = request.page?.pageToken ?? ""
        let deliveries = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT d.*, o.event_id, o.type FROM delivery d JOIN webhook_endpoint e ON e.id = d.endpoint_id JOIN outbox o ON o.seq = d.outbox_seq
                    WHERE e.tenant_id = ? AND (? = '' OR d.endpoint_id = ?) AND (? = '' OR d.status = ?) AND (? = '' OR d.id < ?)
                    ORDER BY d.created_at DESC, d.id DESC LIMIT ?
                    """,
                arguments: [tenant, request.endpointId, request.endpointId, request.status, request.status, before, before, size]
            ).map(Self.delivery)
        }
        return ListDeliveriesResponse(deliveries: deliveries, nextPageToken: deliveries.count == size ? deliveries.last!.id : "")
    }

    /// Sends a delivery again now and answers with how that went.
    public func redeliver(_ request: GetByIdRequest, _ call: ServerCall) async throws -> WebhookDelivery {
        let tenant = tenant(call)
        let due = try await database.read { db in
            try Row.fetchOne(
                db, sql: Deliverer.dueSQL + " WHERE d.id = ? AND e.tenant_id = ? AND e.deleted = 0", arguments: [request.id, tenant]
            ).map(Deliverer.due)
        }
        guard let due else { throw RPCError.notFound("no delivery \(RPCError.quoted(request.id, limit: 40)) to an endpoint of this tenant") }
        await deliverer.attempt(due)
        return try await database.read { db in
            try Self.delivery(Row.fetchOne(
                db, sql: "SELECT d.*, o.event_id, o.type FROM delivery d JOIN outbox o ON o.seq = d.outbox_seq WHERE d.id = ?", arguments: [request.id])!)
        }
    }

    public func mapPrice(_ request: MapPriceRequest, _ call: ServerCall) async throws -> PriceMapping {
        guard !request.priceId.isEmpty, request.priceId.count <= 100 else { throw RPCError.invalidArgument("price_id is required (at most 100 characters)") }
        let tenant = tenant(call)
        if !request.policyId.isEmpty {
            // The policy must exist in this tenant: mapping to nothing would refuse every purchase.
            var metadata = RPCMetadata()
            metadata[RPCMetadata.tenant] = tenant
            do {
                _ = try await issuance.call(IssuanceMethods.getPolicy, GetByIdRequest(id: request.policyId), metadata: metadata, timeout: .seconds(5))
            } catch let error as RPCError where error.code == .notFound {
                throw RPCError.notFound("no policy \(RPCError.quoted(request.policyId, limit: 40))")
            }
        }
        try await database.write { db in
            if request.policyId.isEmpty {
                try db.execute(sql: "DELETE FROM price_mapping WHERE tenant_id = ? AND price_id = ?", arguments: [tenant, request.priceId])
            } else {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO price_mapping (tenant_id, price_id, policy_id) VALUES (?, ?, ?)", arguments: [tenant, request.priceId, request.policyId])
            }
        }
        return PriceMapping(priceId: request.priceId, policyId: request.policyId, tenantId: tenant)
    }

    public func listPriceMappings(_ request: ListPriceMappingsRequest, _ call: ServerCall) async throws -> ListPriceMappingsResponse {
        let tenant = tenant(call)
        return ListPriceMappingsResponse(mappings: try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM price_mapping WHERE tenant_id = ? ORDER BY price_id", arguments: [tenant]).map {
                PriceMapping(priceId: $0["price_id"], policyId: $0["policy_id"], tenantId: $0["tenant_id"])
            }
        })
    }

    /// A new signing secret for a source; the one it replaces is accepted for a day more.
    public func rotateInboundSecret(_ request: RotateInboundSecretRequest, _ call: ServerCall) async throws -> RotateInboundSecretResponse {
        guard Inbound.sources.contains(request.source) else { throw RPCError.invalidArgument("source is stripe, crm or erp") }
        let given = request.secret
        if request.source == "stripe" {
            guard given.hasPrefix("whsec_"), (20...200).contains(given.count) else {
                throw RPCError.invalidArgument("secret: give the endpoint's signing secret Stripe shows (whsec_...)")
            }
        } else {
            guard given.isEmpty else { throw RPCError.invalidArgument("secret: crm and erp secrets are made here; leave it empty") }
        }
        let secret = given.isEmpty ? WebhookSignature.newSecret(prefix: "lmsec_") : given
        let tenant = tenant(call)
        let now = clock.now
        let previousUntil = try await database.write { db -> Int64 in
            try db.execute(
                sql: "UPDATE inbound_secret SET valid_until = ? WHERE tenant_id = ? AND source = ? AND valid_until = 0", arguments: [now + 86400, tenant, request.source])
            let replaced = db.changesCount > 0
            try db.execute(sql: "DELETE FROM inbound_secret WHERE tenant_id = ? AND source = ? AND valid_until != 0 AND valid_until <= ?", arguments: [tenant, request.source, now])
            try db.execute(
                sql: "INSERT INTO inbound_secret (tenant_id, source, secret, created_at) VALUES (?, ?, ?, ?)", arguments: [tenant, request.source, secret, now])
            return replaced ? now + 86400 : 0
        }
        return RotateInboundSecretResponse(
            source: request.source, secret: given.isEmpty ? secret : "", previousValidUntil: previousUntil, path: "/webhooks/\(request.source)/\(tenant)")
    }

    /// Integrations stores customer ids, not names or addresses; what it keeps that names a
    /// customer is the outbox payloads of their events, which are erased.
    public func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall) async throws -> EraseCustomerResponse {
        guard !request.customerId.isEmpty else { throw RPCError.invalidArgument("customer_id is required") }
        let erased = try await database.write { db -> Int in
            try db.execute(
                sql: "UPDATE outbox SET payload = '{\"erased\":true}' WHERE customer_id = ? AND (? IS NULL OR tenant_id = ?)",
                arguments: [request.customerId, call.metadata[RPCMetadata.tenant], call.metadata[RPCMetadata.tenant]])
            var erased = db.changesCount
            try db.execute(
                sql: "DELETE FROM key_mail WHERE customer_id = ? AND (? IS NULL OR tenant_id = ?)",
                arguments: [request.customerId, call.metadata[RPCMetadata.tenant], call.metadata[RPCMetadata.tenant]])
            erased += db.changesCount
            return erased
        }
        return EraseCustomerResponse(
            service: "integrations", recordsErased: UInt64(erased), detail: "the outbox events about customer \(request.customerId) no longer carry their data")
    }

    /// What integrations holds about a customer: the events about them in the outbox and
    /// their deliveries, the reminders and key-reveal e-mails of their licenses (never the
    /// link itself), and the billing references of their licenses.
    public func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall) async throws -> CustomerExport {
        guard !request.customerId.isEmpty else { throw RPCError.invalidArgument("customer_id is required") }
        let tenant = tenant(call)
        let sections = try await database.read { db -> CustomerExportSections.Output in
            let licenses = try String.fetchAll(
                db, sql: "SELECT license_id FROM license_ref WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            let inList = CustomerExportSections.placeholders(licenses.count)
            var sections = CustomerExportSections()
            try sections.add("webhook_events", db, sql: "SELECT * FROM outbox WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            try sections.add(
                "webhook_deliveries", db,
                sql: "SELECT d.* FROM delivery d JOIN outbox o ON o.seq = d.outbox_seq WHERE o.customer_id = ? AND o.tenant_id = ?", arguments: [request.customerId, tenant])
            try sections.add("reminders", db, sql: "SELECT * FROM reminder WHERE license_id IN (\(inList)) AND tenant_id = ?", arguments: StatementArguments(licenses + [tenant]))
            try sections.add("key_emails", db, sql: "SELECT * FROM key_mail WHERE customer_id = ? AND tenant_id = ?", arguments: [request.customerId, tenant])
            try sections.add("billing_references", db, sql: "SELECT * FROM payment_ref WHERE license_id IN (\(inList)) AND tenant_id = ?", arguments: StatementArguments(licenses + [tenant]))
            return sections.output
        }
        return CustomerExport(service: "integrations", json: sections.json, records: UInt64(sections.records))
    }

    /// A policy's schedule and renewal link as they apply (the defaults where none was set).
    public func getRenewalOptions(_ request: GetByIdRequest, _ call: ServerCall) async throws -> RenewalOptions {
        guard !request.id.isEmpty, request.id.count <= 200 else { throw RPCError.invalidArgument("id (the policy id) is required") }
        let tenant = tenant(call)
        let row = try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT days, renewal_url FROM renewal_option WHERE tenant_id = ? AND policy_id = ?", arguments: [tenant, request.id])
        }
        let days = (row?["days"] as String?).map { $0.split(separator: ",").compactMap { UInt32($0) } } ?? options.reminderDays.map(UInt32.init)
        return RenewalOptions(policyId: request.id, days: days, renewalUrl: (row?["renewal_url"] as String?) ?? options.renewalURL)
    }

    /// A policy's reminder schedule and renewal link (an empty `days` and URL: the defaults).
    public func setRenewalOptions(_ request: RenewalOptions, _ call: ServerCall) async throws -> RenewalOptions {
        guard !request.policyId.isEmpty else { throw RPCError.invalidArgument("policy_id is required") }
        guard request.days.count <= 10, request.days.allSatisfy({ (1...365).contains($0) }) else {
            throw RPCError.invalidArgument("days: at most 10 numbers, each 1 to 365 days before expiry")
        }
        if !request.renewalUrl.isEmpty {
            guard request.renewalUrl.count <= 500, let url = URL(string: request.renewalUrl.replacingOccurrences(of: "{license_id}", with: "x")),
                url.scheme == "https" || url.scheme == "http"
            else { throw RPCError.invalidArgument("renewal_url must be an http(s) URL of at most 500 characters; {license_id} is replaced") }
        }
        let tenant = tenant(call)
        var metadata = RPCMetadata()
        metadata[RPCMetadata.tenant] = tenant
        do {
            _ = try await issuance.call(IssuanceMethods.getPolicy, GetByIdRequest(id: request.policyId), metadata: metadata, timeout: .seconds(5))
        } catch let error as RPCError where error.code == .notFound {
            throw RPCError.notFound("no policy \(RPCError.quoted(request.policyId, limit: 40))")
        }
        let days = request.days.isEmpty ? options.reminderDays.map(UInt32.init) : request.days
        let url = request.renewalUrl.isEmpty ? options.renewalURL : request.renewalUrl
        try await database.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO renewal_option (tenant_id, policy_id, days, renewal_url) VALUES (?, ?, ?, ?)",
                arguments: [tenant, request.policyId, days.map(String.init).joined(separator: ","), url])
        }
        return RenewalOptions(policyId: request.policyId, days: days, renewalUrl: url)
    }

    /// A license's reminders for its current end date: sent, failed, skipped and to come.
    public func listReminders(_ request: ListRemindersRequest, _ call: ServerCall) async throws -> ListRemindersResponse {
        let tenant = tenant(call)
        let defaults = options.reminderDays
        let reminders = try await database.read { db -> [Reminder]? in
            guard let license = try Row.fetchOne(
                db,
                sql: """
                    SELECT l.*, o.days FROM license_ref l LEFT JOIN renewal_option o ON o.tenant_id = l.tenant_id AND o.policy_id = l.policy_id
                    WHERE l.license_id = ? AND l.tenant_id = ?
                    """,
                arguments: [request.licenseId, tenant])
            else { return nil }
            let expires: Int64 = license["expires_at"]
            guard expires > 0 else { return [] }
            let days = (license["days"] as String?).map { $0.split(separator: ",").compactMap { Int($0) } } ?? defaults
            var recorded: [String: Row] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM reminder WHERE license_id = ? AND expires_at = ?", arguments: [request.licenseId, expires]) {
                recorded[row["step"]] = row
            }
            return Reminders.steps(expiresAt: expires, grace: license["grace_seconds"], days: days).map { step in
                let row = recorded[step.name]
                return Reminder(
                    step: step.name, dueAt: step.at, status: row?["status"] ?? "scheduled", sentAt: row?["sent_at"] ?? 0, error: row?["error"] ?? "",
                    expiresAt: expires)
            }
        }
        guard let reminders else { throw RPCError.notFound("no license \(RPCError.quoted(request.licenseId, limit: 40)) this service has seen") }
        return ListRemindersResponse(reminders: reminders)
    }

    static func endpoint(_ row: Row) -> WebhookEndpoint {
        let types: String = row["event_types"]
        return WebhookEndpoint(
            id: row["id"], url: row["url"], eventTypes: types.isEmpty ? [] : types.split(separator: ",").map(String.init), createdAt: row["created_at"],
            disabled: !(row["disabled_reason"] as String).isEmpty, disabledReason: row["disabled_reason"], failingSince: row["failing_since"],
            tenantId: row["tenant_id"])
    }

    static func delivery(_ row: Row) -> WebhookDelivery {
        WebhookDelivery(
            id: row["id"], endpointId: row["endpoint_id"], eventId: row["event_id"], eventType: row["type"], status: row["status"],
            attempts: UInt32(clamping: row["attempts"] as Int64), lastStatusCode: UInt32(clamping: row["last_status_code"] as Int64),
            lastError: row["last_error"], lastDurationMs: UInt32(clamping: row["last_duration_ms"] as Int64), nextAttemptAt: row["next_attempt_at"],
            deliveredAt: row["delivered_at"], createdAt: row["created_at"])
    }
}
