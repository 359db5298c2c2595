import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Metered quotas: a limit per license and feature (or a default for a policy's licenses)
// per UTC day, UTC calendar month or in total, with the license's overage allowance. Usage
// recomputes a license's state as events arrive and publishes it on its feed when it
// crosses the limit; validation then answers QUOTA_EXCEEDED for the feature until the
// period ends.

enum QuotaPeriod: String, CaseIterable, Sendable {
    case day, month, total

    /// [start, end) of the period holding `now`; end 0 for `total`.
    func bounds(at now: Int64) -> (start: Int64, end: Int64) {
        switch self {
        case .day:
            let start = now.floorDiv(86400) * 86400
            return (start, start + 86400)
        case .month:
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC")!
            let date = Date(timeIntervalSince1970: TimeInterval(now))
            let parts = calendar.dateComponents([.year, .month], from: date)
            let start = calendar.date(from: parts)!
            let end = calendar.date(byAdding: .month, value: 1, to: start)!
            return (Int64(start.timeIntervalSince1970), Int64(end.timeIntervalSince1970))
        case .total:
            return (Int64.min, 0)
        }
    }
}

extension Int64 {
    func floorDiv(_ divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor < 0) ? quotient - 1 : quotient
    }
}

struct QuotaRule: Sendable, Equatable {
    var limit: UInt64
    var period: QuotaPeriod
    var scope: String
    var scopeId: String
}

enum Quotas {
    /// The quota that applies to a license's feature: its own, else its policy's default.
    static func rule(tenant: String, license: String, policy: String, feature: String, in db: Database) throws -> QuotaRule? {
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT scope, scope_id, quota_limit, period FROM quota
                WHERE tenant_id = ? AND feature = ? AND ((scope = 'license' AND scope_id = ?) OR (scope = 'policy' AND scope_id = ? AND ? != ''))
                ORDER BY scope
                """,
            arguments: [tenant, feature, license, policy, policy])
        guard let row = rows.first, let period = QuotaPeriod(rawValue: row[3]) else { return nil }
        return QuotaRule(limit: UInt64(row[2] as Int64), period: period, scope: row[0], scopeId: row[1])
    }

    /// The limit with the overage allowance (per mille, at least 1000).
    static func allowance(_ limit: UInt64, overagePermille: Int64) -> UInt64 {
        let permille = UInt64(min(max(overagePermille, 1000), 1_000_000))
        let (product, overflow) = limit.multipliedReportingOverflow(by: permille)
        return overflow ? UInt64.max : product / 1000
    }

    /// Recomputes the quota state of a license's feature; returns whether it just became
    /// exceeded. A change of `exceeded` (or of period) is marked for the feed.
    @discardableResult
    static func refresh(tenant: String, license: String, feature: String, now: Int64, in db: Database) throws -> QuotaState? {
        let ref = try Row.fetchOne(db, sql: "SELECT policy_id, overage_permille FROM license_ref WHERE license_id = ?", arguments: [license])
        let policy: String = ref?[0] ?? ""
        let overage: Int64 = ref?[1] ?? 1000
        guard let rule = try rule(tenant: tenant, license: license, policy: policy, feature: feature, in: db) else {
            // No quota (any more): a state left from before is cleared.
            try db.execute(
                sql: "UPDATE quota_state SET exceeded = 0, dirty = 1 WHERE tenant_id = ? AND license_id = ? AND feature = ? AND exceeded = 1",
                arguments: [tenant, license, feature])
            if db.changesCount > 0 {
                return QuotaState(feature: feature, exceeded: false)
            }
            return nil
        }
        let (start, end) = rule.period.bounds(at: now)
        let used = UInt64(try Int64.fetchOne(
            db,
            sql: "SELECT COALESCE(SUM(quantity), 0) FROM usage_daily WHERE tenant_id = ? AND license_id = ? AND feature = ? AND day >= ?",
            arguments: [tenant, license, feature, rule.period == .total ? Int64.min : start]) ?? 0)
        let exceeded = used > allowance(rule.limit, overagePermille: overage)
        let previous = try Row.fetchOne(
            db, sql: "SELECT exceeded, period_ends_at, quota_limit, period FROM quota_state WHERE tenant_id = ? AND license_id = ? AND feature = ?",
            arguments: [tenant, license, feature])
        let changed = previous == nil || (previous![0] as Int) != (exceeded ? 1 : 0) || (previous![1] as Int64) != end
            || (previous![2] as Int64) != Int64(clamping: rule.limit) || (previous![3] as String) != rule.period.rawValue
        try db.execute(
            sql: """
                INSERT INTO quota_state (tenant_id, license_id, feature, period, quota_limit, used, exceeded, period_ends_at, dirty)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(tenant_id, license_id, feature) DO UPDATE SET period = excluded.period, quota_limit = excluded.quota_limit,
                    used = excluded.used, exceeded = excluded.exceeded, period_ends_at = excluded.period_ends_at,
                    dirty = MAX(quota_state.dirty, excluded.dirty)
                """,
            arguments: [tenant, license, feature, rule.period.rawValue, Int64(clamping: rule.limit), Int64(clamping: used), exceeded, end, changed])
        let state = QuotaState(feature: feature, period: rule.period.rawValue, limit: rule.limit, used: used, exceeded: exceeded, periodEndsAt: end)
        return changed ? state : nil
    }

    static func quota(_ row: Row) -> Quota {
        let scope: String = row["scope"]
        return Quota(
            licenseId: scope == "license" ? row["scope_id"] : "", feature: row["feature"], limit: UInt64(row["quota_limit"] as Int64),
            period: row["period"], policyId: scope == "policy" ? row["scope_id"] : "")
    }
}

extension UsageService {
    /// Sets (limit > 0) or removes (limit 0) a quota, for one license or as the default of
    /// a policy's licenses, and brings the affected licenses' states up to date at once.
    public func setQuota(_ request: SetQuotaRequest, _ call: ServerCall) async throws -> Quota {
        guard request.licenseId.isEmpty != request.policyId.isEmpty else {
            throw RPCError.invalidArgument("give one of license_id (a quota for that license) or policy_id (the default of its licenses)")
        }
        guard !request.feature.isEmpty, request.feature.count <= 64 else { throw RPCError.invalidArgument("feature is required (at most 64 characters)") }
        guard let period = QuotaPeriod(rawValue: request.period.isEmpty ? "month" : request.period) else {
            throw RPCError.invalidArgument("period must be day, month or total (UTC), not \(RPCError.quoted(request.period, limit: 20))")
        }
        let now = clock.now
        var tenant = call.metadata[RPCMetadata.tenant] ?? "default"
        var scope = ("policy", request.policyId)
        if !request.licenseId.isEmpty {
            let resolved = try await resolve([UsageEvent(licenseId: request.licenseId)], call)
            guard let license = resolved.first, license.found else { throw RPCError.notFound("no license \(request.licenseId)") }
            tenant = license.tenantId
            scope = ("license", license.licenseId)
            try await committer.write { db in try Self.remember(license, in: db) }
        } else {
            guard request.policyId.count <= 64 else { throw RPCError.invalidArgument("policy_id is longer than 64 characters") }
        }
        let (kind, id) = scope
        let feature = request.feature
        let owner = tenant
        let opened = try await committer.write { db -> [ComplianceAlert] in
            if request.limit == 0 {
                try db.execute(
                    sql: "DELETE FROM quota WHERE tenant_id = ? AND scope = ? AND scope_id = ? AND feature = ?", arguments: [owner, kind, id, feature])
            } else {
                try db.execute(
                    sql: """
                        INSERT INTO quota (tenant_id, scope, scope_id, feature, quota_limit, period) VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT(tenant_id, scope, scope_id, feature) DO UPDATE SET quota_limit = excluded.quota_limit, period = excluded.period
                        """,
                    arguments: [owner, kind, id, feature, Int64(clamping: request.limit), period.rawValue])
            }
            let licenses = kind == "license" ? [id] : try String.fetchAll(
                db, sql: "SELECT license_id FROM license_ref WHERE tenant_id = ? AND policy_id = ?", arguments: [owner, id])
            var opened: [ComplianceAlert] = []
            for license in licenses {
                if let state = try Quotas.refresh(tenant: owner, license: license, feature: feature, now: now, in: db), state.exceeded {
                    opened.append(try Alerts.raise(
                        tenant: owner, license: license, rule: .quotaExceeded, count: 1, detail: Alerts.quotaDetail(state), now: now, in: db))
                }
            }
            return opened
        }
        if !opened.isEmpty { logger.info("quota exceeded", metadata: ["alerts": "\(opened.map { $0.id })"]) }
        // Out on the feed now, not at the next publication: validation catches up with the
        // feed before it denies, so a limit raised a moment ago is seen by the next call.
        try await publisher.publish()
        var quota = Quota(
            licenseId: kind == "license" ? id : "", feature: feature, limit: request.limit, period: period.rawValue, policyId: kind == "policy" ? id : "")
        if kind == "license" { try await fillState(&quota, tenant: owner) }
        return quota
    }

    /// The quotas of a license (its own and its policy's defaults, with their state) or of
    /// a policy; with neither, every quota of the caller's tenant.
    public func listQuotas(_ request: ListQuotasRequest, _ call: ServerCall) async throws -> ListQuotasResponse {
        let tenant = call.metadata[RPCMetadata.tenant]
        if !request.licenseId.isEmpty {
            let resolved = try await resolve([UsageEvent(licenseId: request.licenseId)], call)
            guard let license = resolved.first, license.found else { throw RPCError.notFound("no license \(request.licenseId)") }
            try await committer.write { db in try Self.remember(license, in: db) }
            var quotas = try await database.read { db in
                try Row.fetchAll(
                    db,
                    sql: """
                        SELECT * FROM quota WHERE tenant_id = ? AND ((scope = 'license' AND scope_id = ?) OR (scope = 'policy' AND scope_id = ? AND ? != ''))
                        ORDER BY feature, scope
                        """,
                    arguments: [license.tenantId, license.licenseId, license.policyId, license.policyId]
                ).map(Quotas.quota)
            }
            // A license's own quota wins over its policy's default for the same feature.
            var seen = Set<String>()
            quotas = quotas.filter { seen.insert($0.feature).inserted }
            for index in quotas.indices {
                quotas[index].licenseId = license.licenseId
                try await fillState(&quotas[index], tenant: license.tenantId)
            }
            return ListQuotasResponse(quotas: quotas)
        }
        let quotas = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM quota WHERE (? IS NULL OR tenant_id = ?) AND (? = '' OR (scope = 'policy' AND scope_id = ?))
                    ORDER BY scope, scope_id, feature LIMIT 1000
                    """,
                arguments: [tenant, tenant, request.policyId, request.policyId]
            ).map(Quotas.quota)
        }
        return ListQuotasResponse(quotas: quotas)
    }

    /// The current period's use of a license's quota.
    private func fillState(_ quota: inout Quota, tenant: String) async throws {
        let now = clock.now
        let license = quota.licenseId
        let feature = quota.feature
        let state = try await committer.write { db -> (Int64, Bool, Int64, Int64)? in
            try Quotas.refresh(tenant: tenant, license: license, feature: feature, now: now, in: db)
            return try Row.fetchOne(
                db,
                sql: """
                    SELECT s.used, s.exceeded, s.period_ends_at, COALESCE(r.overage_permille, 1000) FROM quota_state s
                    LEFT JOIN license_ref r ON r.license_id = s.license_id WHERE s.tenant_id = ? AND s.license_id = ? AND s.feature = ?
                    """,
                arguments: [tenant, license, feature]
            ).map { ($0[0], $0[1], $0[2], $0[3]) }
        }
        guard let (used, exceeded, endsAt, overage) = state else { return }
        quota.used = UInt64(used)
        quota.exceeded = exceeded
        quota.periodEndsAt = endsAt
        quota.overagePermille = UInt32(clamping: overage)
    }

    /// What validation told usage of a license, for its policy's quotas.
    static func remember(_ license: ResolvedLicense, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO license_ref (license_id, tenant_id, policy_id, overage_permille) VALUES (?, ?, ?, ?)
                ON CONFLICT(license_id) DO UPDATE SET tenant_id = excluded.tenant_id, policy_id = excluded.policy_id,
                    overage_permille = excluded.overage_permille
                WHERE license_ref.policy_id != excluded.policy_id OR license_ref.overage_permille != excluded.overage_permille
                    OR license_ref.tenant_id != excluded.tenant_id
                """,
            arguments: [license.licenseId, license.tenantId, license.policyId, license.overagePermille == 0 ? 1000 : Int64(license.overagePermille)])
    }
}
