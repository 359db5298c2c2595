import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

// The usage report: per license and feature, what was used in the period, how many
// machines and seats were in use at once, and how validations went. Counted in whole UTC
// days (the read model keeps daily rollups).

extension ReportingService {
    public func usageReport(_ request: ReportRequest, _ call: ServerCall) async throws -> UsageReportResponse {
        let scope = try ReportScope(request, call, now: clock.now)
        var response = try await database.read { db in try Self.usageReport(scope, in: db) }
        let names = CustomerNames(issuance: issuance, database: database)
        for index in response.rows.indices { response.rows[index].customerName = await names.name(response.rows[index].customerId) }
        response.header = header(from: scope.from, to: scope.to)
        return response
    }

    /// Licenses in scope used or validated in the period, in id order.
    static let activeLicenses = """
        SELECT l.* FROM r_license l WHERE \(ReportScope.licenses) AND l.id > ?6
            AND (EXISTS (SELECT 1 FROM r_outcome_daily o WHERE o.license_id = l.id AND o.day >= ?4 AND o.day < ?5)
              OR EXISTS (SELECT 1 FROM r_usage_daily u WHERE u.license_id = l.id AND u.day >= ?4 AND u.day < ?5))
        """

    static func usageReport(_ scope: ReportScope, in db: Database) throws -> UsageReportResponse {
        let (firstDay, endDay) = scope.days
        var response = UsageReportResponse()
        // The page: licenses after the token, each with its rows.
        let licenses = try Row.fetchAll(
            db, sql: activeLicenses + " ORDER BY l.id LIMIT ?7", arguments: scope.arguments([firstDay, endDay, scope.pageToken, scope.pageSize]))
        for license in licenses {
            response.rows += try usageRows(license, firstDay, endDay, in: db)
        }
        if licenses.count == scope.pageSize { response.nextPageToken = licenses.last!["id"] }
        // Totals over every license in scope, not only the page.
        let totals = try Row.fetchOne(
            db,
            sql: """
                SELECT COUNT(*), COALESCE(SUM(over), 0) FROM (
                    SELECT (
                        (\(allowanceSQL("max_machines")) > 0 AND COALESCE((SELECT MAX(peak_machines) FROM r_activity_daily a
                            WHERE a.license_id = l.id AND a.day >= ?4 AND a.day < ?5), 0) > \(allowanceSQL("max_machines")))
                        OR (\(allowanceSQL("max_seats")) > 0 AND COALESCE((SELECT MAX(peak_seats) FROM r_activity_daily a
                            WHERE a.license_id = l.id AND a.day >= ?4 AND a.day < ?5), 0) > \(allowanceSQL("max_seats")))
                        OR EXISTS (SELECT 1 FROM r_quota_exceeded q WHERE q.license_id = l.id AND q.day >= ?4 AND q.day < ?5)
                    ) AS over
                    FROM r_license l WHERE \(ReportScope.licenses) AND l.id > ?6
                        AND (EXISTS (SELECT 1 FROM r_outcome_daily o WHERE o.license_id = l.id AND o.day >= ?4 AND o.day < ?5)
                          OR EXISTS (SELECT 1 FROM r_usage_daily u WHERE u.license_id = l.id AND u.day >= ?4 AND u.day < ?5))
                )
                """,
            arguments: scope.arguments([firstDay, endDay, ""]))!
        response.activeLicenses = UInt32(clamping: totals[0] as Int64)
        response.overLimit = UInt32(clamping: totals[1] as Int64)
        response.validations = try Row.fetchAll(
            db,
            sql: """
                SELECT o.reason, SUM(o.count) FROM r_license l JOIN r_outcome_daily o ON o.license_id = l.id
                WHERE \(ReportScope.licenses) AND o.day >= ?4 AND o.day < ?5 GROUP BY o.reason ORDER BY o.reason
                """,
            arguments: scope.arguments([firstDay, endDay])
        ).map { OutcomeCount(reason: ReasonCode(rawValue: $0[0]), count: UInt64($0[1] as Int64)) }
        return response
    }

    /// A license's rows: one per feature used (or one with no feature), each with the
    /// license's validations, machines and seats.
    static func usageRows(_ license: Row, _ firstDay: Int64, _ endDay: Int64, in db: Database) throws -> [UsageReportRow] {
        let id: String = license["id"]
        let range: StatementArguments = [id, firstDay, endDay]
        var valid: UInt64 = 0
        var denied: UInt64 = 0
        for row in try Row.fetchAll(db, sql: "SELECT reason, SUM(count) FROM r_outcome_daily WHERE license_id = ? AND day >= ? AND day < ? GROUP BY reason", arguments: range) {
            let reason = ReasonCode(rawValue: row[0])
            let count = UInt64(row[1] as Int64)
            if reason == .valid || reason == .inGrace { valid += count } else { denied += count }
        }
        let peaks = try Row.fetchOne(
            db, sql: "SELECT COALESCE(MAX(peak_seats), 0), COALESCE(MAX(peak_machines), 0) FROM r_activity_daily WHERE license_id = ? AND day >= ? AND day < ?",
            arguments: range)!
        let activeMachines = try Int64.fetchOne(db, sql: "SELECT active FROM r_machines WHERE license_id = ?", arguments: [id]) ?? 0
        let quotaExceeded = try Bool.fetchOne(
            db, sql: "SELECT EXISTS (SELECT 1 FROM r_quota_exceeded WHERE license_id = ? AND day >= ? AND day < ?)", arguments: range) ?? false
        let overage = Int64(min(max(license["overage_permille"] as Int64, 1000), 1_000_000))
        func allowance(_ limit: Int64) -> Int64 { limit == 0 ? 0 : limit * overage / 1000 }
        let (peakSeats, peakMachines): (Int64, Int64) = (peaks[0], peaks[1])
        let seatLimit = allowance(license["max_seats"])
        let machineLimit = allowance(license["max_machines"])
        let over = quotaExceeded || (seatLimit > 0 && peakSeats > seatLimit) || (machineLimit > 0 && peakMachines > machineLimit)
        let template = UsageReportRow(
            licenseId: id, productId: license["product_id"], peakConcurrent: UInt32(clamping: peakSeats), limit: UInt32(clamping: license["max_seats"] as Int64),
            customerId: license["customer_id"], activeMachines: UInt32(clamping: activeMachines),
            peakMachines: UInt32(clamping: peakMachines), maxMachines: UInt32(clamping: license["max_machines"] as Int64),
            validationsValid: valid, validationsDenied: denied, overLimit: over)
        let features = try Row.fetchAll(
            db,
            sql: "SELECT feature, SUM(quantity), SUM(events) FROM r_usage_daily WHERE license_id = ? AND day >= ? AND day < ? GROUP BY feature ORDER BY feature",
            arguments: range)
        guard !features.isEmpty else { return [template] }
        return features.map { feature in
            var row = template
            row.feature = feature[0]
            row.quantity = UInt64(feature[1] as Int64)
            row.events = UInt64(feature[2] as Int64)
            return row
        }
    }
}
