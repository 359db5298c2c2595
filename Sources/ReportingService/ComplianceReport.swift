import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

// The compliance audit: which licenses were out of compliance in the period and why
// (alerts by rule, more machines at once than allowed, use after the end of rights,
// validations from denied regions), license states, and issuance's audit chain verified
// as the report is produced. An auditor hands it over, so it states the period and when
// it was produced.

extension ReportingService {
    public func complianceReport(_ request: ReportRequest, _ call: ServerCall) async throws -> ComplianceReportResponse {
        let scope = try ReportScope(request, call, now: clock.now)
        var response = try await database.read { db in try Self.complianceReport(scope, in: db) }
        let names = CustomerNames(issuance: issuance, database: database)
        for index in response.violations.indices {
            response.violations[index].customerName = await names.name(response.violations[index].customerId)
        }
        do {
            let audit = try await issuance.call(IssuanceMethods.verifyAuditChain, VerifyAuditChainRequest(), timeout: .seconds(30))
            response.auditChainIntact = audit.intact
            response.auditRows = audit.rowsChecked
            response.auditDetail = audit.intact ? "the audit chain of \(audit.rowsChecked) rows verifies" : audit.detail
        } catch {
            response.auditDetail = "issuance could not be asked to verify its audit chain (\(error)); not verified"
        }
        response.header = header(from: scope.from, to: scope.to)
        return response
    }

    static func complianceReport(_ scope: ReportScope, in db: Database) throws -> ComplianceReportResponse {
        let (firstDay, endDay) = scope.days
        var response = ComplianceReportResponse()
        let alertRows = try Row.fetchAll(
            db,
            sql: """
                SELECT a.*, l.customer_id FROM r_alert a JOIN r_license l ON l.id = a.license_id
                WHERE \(ReportScope.licenses) AND a.last_at >= ?4 AND a.first_at < ?5 AND a.id > ?6 ORDER BY a.id LIMIT ?7
                """,
            arguments: scope.arguments([scope.from, scope.to, scope.pageToken, scope.pageSize]))
        response.alerts = alertRows.map {
            ComplianceAlertSummary(
                licenseId: $0["license_id"], reason: ReasonCode(rawValue: $0["reason"]), count: UInt32(clamping: $0["count"] as Int64),
                lastRaisedAt: $0["last_at"], rule: $0["rule"], acknowledged: $0["acknowledged"], customerId: $0["customer_id"],
                alertId: $0["id"], detail: $0["detail"])
        }
        if alertRows.count == scope.pageSize { response.nextPageToken = alertRows.last!["id"] }
        response.byRule = try Row.fetchAll(
            db,
            sql: """
                SELECT a.rule, COUNT(*), SUM(a.count) FROM r_alert a JOIN r_license l ON l.id = a.license_id
                WHERE \(ReportScope.licenses) AND a.last_at >= ?4 AND a.first_at < ?5 GROUP BY a.rule ORDER BY a.rule
                """,
            arguments: scope.arguments([scope.from, scope.to])
        ).map { RuleCount(rule: $0[0], alerts: UInt32(clamping: $0[1] as Int64), triggers: UInt64($0[2] as Int64)) }
        response.licenseStates = try Row.fetchAll(
            db, sql: "SELECT l.state, COUNT(*) FROM r_license l WHERE \(ReportScope.licenses) AND l.issued_at < ?4 GROUP BY l.state ORDER BY l.state",
            arguments: scope.arguments([scope.to])
        ).map { StateCount(state: LicenseState(rawValue: $0[0]), licenses: UInt32(clamping: $0[1] as Int64)) }

        // Why each license is out of compliance: one pass per kind of evidence.
        var reasons: [String: [String]] = [:]
        var owners: [String: (product: String, customer: String)] = [:]
        func note(_ row: Row, _ reason: String) {
            let id: String = row["id"]
            reasons[id, default: []].append(reason)
            owners[id] = (row["product_id"], row["customer_id"])
        }
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT l.id, l.product_id, l.customer_id, group_concat(DISTINCT a.rule) AS rules FROM r_alert a JOIN r_license l ON l.id = a.license_id
                WHERE \(ReportScope.licenses) AND a.last_at >= ?4 AND a.first_at < ?5 GROUP BY l.id
                """,
            arguments: scope.arguments([scope.from, scope.to]))
        {
            note(row, "alerts: " + (row["rules"] as String).split(separator: ",").sorted().joined(separator: ", "))
        }
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT l.id, l.product_id, l.customer_id, MAX(a.peak_machines) AS peak, \(allowanceSQL("max_machines")) AS allowed
                FROM r_license l JOIN r_activity_daily a ON a.license_id = l.id
                WHERE \(ReportScope.licenses) AND a.day >= ?4 AND a.day < ?5 AND l.max_machines > 0
                GROUP BY l.id HAVING peak > allowed
                """,
            arguments: scope.arguments([firstDay, endDay]))
        {
            note(row, "over-deployed: \(row["peak"] as Int64) machines at once, \(row["allowed"] as Int64) allowed")
        }
        for (reasonCodes, label) in [([3, 4, 5], "validations after the end of rights (expired, suspended or revoked)"), ([12], "validations from denied regions")] {
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT l.id, l.product_id, l.customer_id, SUM(o.count) AS attempts FROM r_license l JOIN r_outcome_daily o ON o.license_id = l.id
                    WHERE \(ReportScope.licenses) AND o.day >= ?4 AND o.day < ?5 AND o.reason IN (\(reasonCodes.map(String.init).joined(separator: ",")))
                    GROUP BY l.id
                    """,
                arguments: scope.arguments([firstDay, endDay]))
            {
                note(row, "\(row["attempts"] as Int64) \(label)")
            }
        }
        response.violations = reasons.keys.sorted().map { id in
            LicenseCompliance(licenseId: id, productId: owners[id]!.product, customerId: owners[id]!.customer, reasons: reasons[id]!)
        }
        let licenses = response.licenseStates.reduce(0) { $0 + Int($1.licenses) }
        response.violatingLicenses = UInt32(clamping: reasons.count)
        response.compliantLicenses = UInt32(clamping: max(0, licenses - reasons.count))
        return response
    }
}
