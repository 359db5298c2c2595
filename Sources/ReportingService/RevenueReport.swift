import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

// Revenue: payments per product, UTC month and currency (no conversion: one row per
// currency, summed exactly in minor units); recurring revenue of the active subscriptions;
// subscriptions started, renewed, churned and failed payments per month.

extension ReportingService {
    public func revenueReport(_ request: ReportRequest, _ call: ServerCall) async throws -> RevenueReportResponse {
        let scope = try ReportScope(request, call, now: clock.now)
        let now = clock.now
        var response = try await database.read { db in try Self.revenueReport(scope, now: now, in: db) }
        response.header = header(from: scope.from, to: scope.to)
        return response
    }

    /// The average month, for normalising a subscription's period to monthly revenue.
    static let averageMonth: Int64 = 2_629_746

    static func revenueReport(_ scope: ReportScope, now: Int64, in db: Database) throws -> RevenueReportResponse {
        var response = RevenueReportResponse()
        response.rows = try Row.fetchAll(
            db,
            sql: """
                SELECT l.product_id, strftime('%Y-%m', p.paid_at, 'unixepoch') AS month, p.currency, SUM(p.amount_minor), COUNT(*)
                FROM r_payment p JOIN r_license l ON l.id = p.license_id
                WHERE \(ReportScope.licenses) AND p.paid_at >= ?4 AND p.paid_at < ?5
                GROUP BY l.product_id, month, p.currency ORDER BY month, l.product_id, p.currency
                """,
            arguments: scope.arguments([scope.from, scope.to])
        ).map { RevenueRow(productId: $0[0], currency: $0[2], amountMinor: $0[3], payments: UInt32(clamping: $0[4] as Int64), month: $0[1]) }

        // Recurring revenue: each active subscription's amount per period, per average month.
        var recurring: [String: (monthly: Int128, count: UInt32)] = [:]
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT s.currency, s.amount_minor, s.period_start, s.period_end FROM r_subscription s JOIN r_license l ON l.id = s.license_id
                WHERE \(ReportScope.licenses) AND s.status = 1 AND s.period_end > ?4 AND s.amount_minor > 0
                """,
            arguments: scope.arguments([now]))
        {
            let (currency, amount, start, end): (String, Int64, Int64, Int64) = (row[0], row[1], row[2], row[3])
            let period = max(end - start, 86400)
            let monthly = Int128(amount) * Int128(averageMonth) / Int128(period)
            let sum = recurring[currency, default: (0, 0)]
            recurring[currency] = (sum.monthly + monthly, sum.count + 1)
        }
        response.recurring = recurring.keys.sorted().map { currency in
            let (monthly, count) = recurring[currency]!
            return RecurringRevenue(
                currency: currency, mrrMinor: Int64(clamping: monthly), arrMinor: Int64(clamping: monthly * 12), subscriptions: count)
        }

        var movements: [String: SubscriptionMovement] = [:]
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT strftime('%Y-%m', m.at, 'unixepoch') AS month, m.kind, COUNT(*) FROM r_movement m JOIN r_license l ON l.id = m.license_id
                WHERE \(ReportScope.licenses) AND m.at >= ?4 AND m.at < ?5 GROUP BY month, m.kind
                """,
            arguments: scope.arguments([scope.from, scope.to]))
        {
            let month: String = row[0]
            let count = UInt32(clamping: row[2] as Int64)
            var movement = movements[month] ?? SubscriptionMovement(month: month)
            switch row[1] as String {
            case "started": movement.started = count
            case "renewal": movement.renewals = count
            case "churned": movement.churned = count
            default: movement.failedPayments = count
            }
            movements[month] = movement
        }
        response.movements = movements.keys.sorted().map { movements[$0]! }
        return response
    }
}
