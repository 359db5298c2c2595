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
        response.rows = try usageRows(licenses, firstDay, endDay, in: db)
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

    /// The rows of a page of licenses (in id order): one per feature each used (or one with
    /// no feature), each with its license's validations, machines and seats. Five range
    /// reads for the whole page, not five per license.
    static func usageRows(_ licenses: [Row], _ firstDay: Int64, _ endDay: Int64, in db: Database) throws -> [UsageReportRow] {
        guard let first = licenses.first?["id"] as String?, let last = licenses.last?["id"] as String? else { return [] }
        let range: StatementArguments = [first, last, firstDay, endDay]
        var valid: [String: UInt64] = [:]
        var denied: [String: UInt64] = [:]
        for row in try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT license_id, reason IN (\(ReasonCode.valid.rawValue), \(ReasonCode.inGrace.rawValue)), SUM(count) FROM r_outcome_daily
                WHERE license_id BETWEEN ? AND ? AND day >= ? AND day < ? GROUP BY 1, 2
                """),
            arguments: range)
        {
            if row[1] as Bool { valid[row[0]] = UInt64(row[2] as Int64) } else { denied[row[0]] = UInt64(row[2] as Int64) }
        }
        var peaks: [String: (seats: Int64, machines: Int64)] = [:]
        for row in try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT license_id, MAX(peak_seats), MAX(peak_machines) FROM r_activity_daily
                WHERE license_id BETWEEN ? AND ? AND day >= ? AND day < ? GROUP BY license_id
                """),
            arguments: range)
        {
            peaks[row[0]] = (row[1], row[2])
        }
        var machines: [String: Int64] = [:]
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT license_id, active FROM r_machines WHERE license_id BETWEEN ? AND ?"), arguments: [first, last]) {
            machines[row[0]] = row[1]
        }
        let quotaExceeded = Set(try String.fetchAll(
            db.cachedStatement(sql: "SELECT DISTINCT license_id FROM r_quota_exceeded WHERE license_id BETWEEN ? AND ? AND day >= ? AND day < ?"),
            arguments: range))
        var features: [String: [(String, UInt64, UInt64)]] = [:]
        for row in try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT license_id, feature, SUM(quantity), SUM(events) FROM r_usage_daily
                WHERE license_id BETWEEN ? AND ? AND day >= ? AND day < ? GROUP BY license_id, feature ORDER BY license_id, feature
                """),
            arguments: range)
        {
            features[row[0], default: []].append((row[1], UInt64(row[2] as Int64), UInt64(row[3] as Int64)))
        }

        var rows: [UsageReportRow] = []
        rows.reserveCapacity(licenses.count * 2)
        for license in licenses {
            let id: String = license["id"]
            let overage = Int64(min(max(license["overage_permille"] as Int64, 1000), 1_000_000))
            func allowance(_ limit: Int64) -> Int64 { limit == 0 ? 0 : limit * overage / 1000 }
            let peak = peaks[id] ?? (0, 0)
            let seatLimit = allowance(license["max_seats"])
            let machineLimit = allowance(license["max_machines"])
            let over = quotaExceeded.contains(id) || (seatLimit > 0 && peak.seats > seatLimit) || (machineLimit > 0 && peak.machines > machineLimit)
            let template = UsageReportRow(
                licenseId: id, productId: license["product_id"], peakConcurrent: UInt32(clamping: peak.seats),
                limit: UInt32(clamping: license["max_seats"] as Int64), customerId: license["customer_id"],
                activeMachines: UInt32(clamping: machines[id] ?? 0), peakMachines: UInt32(clamping: peak.machines),
                maxMachines: UInt32(clamping: license["max_machines"] as Int64), validationsValid: valid[id] ?? 0, validationsDenied: denied[id] ?? 0,
                overLimit: over)
            guard let used = features[id] else {
                rows.append(template)
                continue
            }
            for (feature, quantity, events) in used {
                var row = template
                row.feature = feature
                row.quantity = quantity
                row.events = events
                rows.append(row)
            }
        }
        return rows
    }
}
