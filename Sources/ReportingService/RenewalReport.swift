import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

// The renewal pipeline: licenses and subscriptions that end in the next N days, and those
// in their grace period now, soonest first — with the customer, the last paid amount,
// whether they renew by themselves.

extension ReportingService {
    public func renewalPipeline(_ request: ReportRequest, _ call: ServerCall) async throws -> RenewalPipelineResponse {
        guard request.days <= 3650 else { throw RPCError.invalidArgument("days must be at most 3650 (ten years), got \(request.days)") }
        let now = clock.now
        let scope = try ReportScope(request, call, now: now)
        let days = Int64(request.days == 0 ? 30 : request.days)
        var response = try await database.read { db in try Self.renewalPipeline(scope, now: now, days: days, in: db) }
        let names = CustomerNames(issuance: issuance, database: database)
        for index in response.rows.indices { response.rows[index].customerName = await names.name(response.rows[index].customerId) }
        response.header = header(from: now, to: now + days * 86400)
        return response
    }

    static func renewalPipeline(_ scope: ReportScope, now: Int64, days: Int64, in db: Database) throws -> RenewalPipelineResponse {
        // The token is "<ends at>/<license id>" of the last row given.
        var after: (Int64, String) = (Int64.min, "")
        if !scope.pageToken.isEmpty {
            let parts = scope.pageToken.split(separator: "/", maxSplits: 1)
            guard parts.count == 2, let at = Int64(parts[0]) else { throw RPCError.invalidArgument("page_token is not one this service gave") }
            after = (at, String(parts[1]))
        }
        let horizon = now + days * 86400
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT * FROM (
                    SELECT l.id, l.customer_id, l.product_id, l.state, l.grace_seconds, s.id AS subscription_id, s.auto_renew, s.amount_minor, s.currency,
                        CASE WHEN l.expires_at > 0 THEN l.expires_at ELSE COALESCE(s.period_end, 0) END AS ends_at
                    FROM r_license l LEFT JOIN r_subscription s ON s.id = (
                        SELECT id FROM r_subscription WHERE license_id = l.id AND status != 3 ORDER BY period_end DESC LIMIT 1)
                    WHERE \(ReportScope.licenses) AND l.state IN (1, 2)
                )
                WHERE ends_at > 0 AND ends_at <= ?5 AND ends_at + grace_seconds > ?4 AND (ends_at > ?6 OR (ends_at = ?6 AND id > ?7))
                ORDER BY ends_at, id LIMIT ?8
                """,
            arguments: scope.arguments([now, horizon, after.0, after.1, scope.pageSize]))
        var response = RenewalPipelineResponse()
        response.rows = rows.map { row in
            let endsAt: Int64 = row["ends_at"]
            let grace: Int64 = row["grace_seconds"]
            return RenewalPipelineRow(
                licenseId: row["id"], customerId: row["customer_id"], expiresAt: endsAt, autoRenew: row["auto_renew"] ?? false,
                state: LicenseState(rawValue: row["state"]), productId: row["product_id"], graceEndsAt: endsAt.saturatingAdd(grace),
                inGrace: endsAt <= now, subscriptionId: row["subscription_id"] ?? "", lastAmountMinor: row["amount_minor"] ?? 0,
                currency: row["currency"] ?? "")
        }
        if rows.count == scope.pageSize, let last = response.rows.last { response.nextPageToken = "\(last.expiresAt)/\(last.licenseId)" }
        return response
    }
}
