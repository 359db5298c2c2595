import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

/// The compliance rules an alert can come from, with the reason code it carries.
enum AlertRule: String, CaseIterable, Sendable {
    case seatOveruse = "seat-overuse"
    case machineChurn = "machine-churn"
    case fingerprintSharing = "fingerprint-sharing"
    case countrySharing = "country-sharing"
    case deniedRegion = "denied-region"
    case useAfterEnd = "use-after-end"
    case quotaExceeded = "quota-exceeded"
    case clockTamper = "clock-tamper"

    var reason: ReasonCode {
        switch self {
        case .seatOveruse: .seatLimit
        case .machineChurn, .fingerprintSharing: .machineLimit
        case .countrySharing, .deniedRegion: .regionNotAllowed
        case .useAfterEnd: .revoked
        case .quotaExceeded: .quotaExceeded
        case .clockTamper: .badSignature
        }
    }
}

/// Compliance alerts: one open alert per license and rule, however often the rule
/// triggers — each trigger adds to its count and moves its last occurrence — until an
/// operator acknowledges it; a trigger after that opens a new one.
enum Alerts {
    @discardableResult
    static func raise(
        tenant: String, license: String, rule: AlertRule, reason: ReasonCode? = nil, count: UInt64, detail: String, now: Int64, in db: Database
    ) throws -> ComplianceAlert {
        try db.execute(
            sql: """
                INSERT INTO alert (id, tenant_id, license_id, rule, reason, detail, first_at, last_at, count)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(tenant_id, license_id, rule) WHERE acknowledged_at IS NULL DO UPDATE SET
                    count = alert.count + excluded.count, last_at = MAX(alert.last_at, excluded.last_at), detail = excluded.detail, dirty = 1
                """,
            arguments: [
                EntityID.make("alert"), tenant, license, rule.rawValue, (reason ?? rule.reason).rawValue, detail, now, now, Int64(clamping: max(count, 1)),
            ])
        let row = try Row.fetchOne(
            db, sql: "SELECT * FROM alert WHERE tenant_id = ? AND license_id = ? AND rule = ? AND acknowledged_at IS NULL",
            arguments: [tenant, license, rule.rawValue])!
        return alert(row)
    }

    static func alert(_ row: Row) -> ComplianceAlert {
        let acknowledgedAt: Int64? = row["acknowledged_at"]
        return ComplianceAlert(
            id: row["id"], licenseId: row["license_id"], reason: ReasonCode(rawValue: row["reason"]), detail: row["detail"],
            raisedAt: row["first_at"], acknowledged: acknowledgedAt != nil, rule: row["rule"], lastSeenAt: row["last_at"],
            count: UInt64(row["count"] as Int64), acknowledgedBy: row["acknowledged_by"], acknowledgedAt: acknowledgedAt ?? 0,
            tenantId: row["tenant_id"])
    }

    static func quotaDetail(_ state: QuotaState) -> String {
        "feature \(state.feature) used \(state.used) of its \(state.limit)-per-\(state.period) quota"
            + (state.periodEndsAt == 0 ? "" : " (the period ends \(ISODate.format(state.periodEndsAt)))")
    }
}

extension UsageService {
    /// Alerts of the caller's tenant, newest first: open ones by default; by license, rule,
    /// acknowledged or not.
    public func listAlerts(_ request: ListAlertsRequest, _ call: ServerCall) async throws -> ListAlertsResponse {
        if !request.rule.isEmpty, AlertRule(rawValue: request.rule) == nil {
            throw RPCError.invalidArgument(
                "no rule \(RPCError.quoted(request.rule, limit: 40)); rules: \(AlertRule.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let tenant = call.metadata[RPCMetadata.tenant]
        let size = request.page == nil || request.page!.pageSize == 0 ? 100 : min(Int(request.page!.pageSize), 1000)
        let before = request.page?.pageToken ?? ""
        let state = request.acknowledgedOnly ? "acknowledged_at IS NOT NULL" : request.includeAcknowledged ? "1" : "acknowledged_at IS NULL"
        let alerts = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM alert WHERE (? IS NULL OR tenant_id = ?) AND (? = '' OR license_id = ?) AND (? = '' OR rule = ?)
                        AND \(state) AND (? = '' OR id < ?)
                    ORDER BY id DESC LIMIT ?
                    """,
                arguments: [tenant, tenant, request.licenseId, request.licenseId, request.rule, request.rule, before, before, size]
            ).map(Alerts.alert)
        }
        return ListAlertsResponse(alerts: alerts, nextPageToken: alerts.count == size ? alerts.last!.id : "")
    }

    /// Records who acknowledged an alert and when; the next trigger of its rule on that
    /// license opens a new one. Acknowledging twice keeps the first record.
    public func acknowledgeAlert(_ request: GetByIdRequest, _ call: ServerCall) async throws -> ComplianceAlert {
        guard !request.id.isEmpty else { throw RPCError.invalidArgument("id is required (an alert id, from alerts list)") }
        let tenant = call.metadata[RPCMetadata.tenant]
        let actor = call.metadata[RPCMetadata.actor] ?? call.localUser ?? "a local caller"
        let now = clock.now
        let alert = try await committer.write { db -> ComplianceAlert? in
            try db.execute(
                sql: """
                    UPDATE alert SET acknowledged_by = ?, acknowledged_at = ?, dirty = 1
                    WHERE id = ? AND (? IS NULL OR tenant_id = ?) AND acknowledged_at IS NULL
                    """,
                arguments: [actor, now, request.id, tenant, tenant])
            return try Row.fetchOne(db, sql: "SELECT * FROM alert WHERE id = ? AND (? IS NULL OR tenant_id = ?)", arguments: [request.id, tenant, tenant])
                .map(Alerts.alert)
        }
        guard let alert else { throw RPCError.notFound("no alert \(RPCError.quoted(request.id, limit: 40))") }
        return alert
    }

    /// A product's offline verifier reports tampering (its clock set back past the last
    /// time it saw): a clock-tamper alert on the license.
    public func reportTamper(_ request: TamperReport, _ call: ServerCall) async throws -> TamperReportResponse {
        let kind = request.kind.isEmpty ? "clock-rollback" : request.kind
        guard kind.count <= 40, kind.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw RPCError.invalidArgument("kind is a short name such as clock-rollback (letters, digits and dashes, at most 40)")
        }
        guard request.detail.count <= 500 else { throw RPCError.invalidArgument("detail is longer than 500 characters") }
        let resolved = try await resolve([UsageEvent(licenseKey: request.licenseKey, licenseId: request.licenseId)], call)
        guard let license = resolved.first, license.found else {
            throw RPCError.notFound(request.licenseKey.isEmpty && request.licenseId.isEmpty ? "name the license: license_key or license_id" : "no license has this key or id")
        }
        let now = clock.now
        let observed = request.observedAt == 0 ? "" : " at \(ISODate.format(request.observedAt))"
        let detail = "\(kind) reported by the product\(observed)" + (request.detail.isEmpty ? "" : ": \(request.detail)")
        let alert = try await committer.write { db in
            try Alerts.raise(tenant: license.tenantId, license: license.licenseId, rule: .clockTamper, count: 1, detail: detail, now: now, in: db)
        }
        return TamperReportResponse(alert: alert)
    }
}
