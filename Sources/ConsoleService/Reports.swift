import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

/// The four reports, each as a table (the page and the CSV download show the same rows)
/// and a bar chart of its headline figure.
enum ReportKind: String, CaseIterable {
    case usage, compliance, revenue, renewals

    var label: String {
        switch self {
        case .usage: "Usage"
        case .compliance: "Compliance"
        case .revenue: "Revenue"
        case .renewals: "Renewals"
        }
    }
}

struct ReportTable {
    var columns: [String] = []
    var rows: [[String]] = []
    var bars: [BarChart.Bar] = []
    var chartTitle = ""
    var summary: [String] = []
    var error: String?
}

extension ConsoleService {
    func report(_ kind: ReportKind, _ context: ConsoleContext, _ identity: OperatorIdentity) async -> ReportTable {
        let now = clock.now
        let request = ReportRequest(from: now - 30 * 86400, to: now, page: PageRequest(pageSize: 1000))
        let key = identity.apiKey
        let address = context.address
        var table = ReportTable()
        do {
            switch kind {
            case .usage:
                let answer = try await gateway.call(ReportingMethods.usageReport, request, credential: key, address: address)
                table.columns = ["License", "Customer", "Feature", "Quantity", "Peak seats", "Peak machines", "Valid checks", "Denied checks", "Over limit"]
                table.rows = answer.rows.map {
                    [$0.licenseId, $0.customerName.isEmpty ? $0.customerId : $0.customerName, $0.feature, "\($0.quantity)", "\($0.peakConcurrent)", "\($0.peakMachines)",
                     "\($0.validationsValid)", "\($0.validationsDenied)", $0.overLimit ? "yes" : "no"]
                }
                var byFeature: [String: Double] = [:]
                for row in answer.rows where !row.feature.isEmpty { byFeature[row.feature, default: 0] += Double(row.quantity) }
                table.bars = byFeature.sorted { $0.value > $1.value }.prefix(12).map { BarChart.Bar(label: $0.key, value: $0.value) }
                table.chartTitle = "Usage by feature, last 30 days"
                table.summary = ["\(answer.activeLicenses) active licenses, \(answer.overLimit) over a limit."]
            case .compliance:
                let answer = try await gateway.call(ReportingMethods.complianceReport, request, credential: key, address: address)
                table.columns = ["License", "Customer", "Rule", "Alerts", "Last raised", "Acknowledged", "Detail"]
                table.rows = answer.alerts.map {
                    [$0.licenseId, $0.customerId, Words.rule($0.rule), "\($0.count)", Words.day($0.lastRaisedAt), $0.acknowledged ? "yes" : "no", $0.detail]
                }
                table.bars = answer.byRule.map { BarChart.Bar(label: Words.rule($0.rule), value: Double($0.alerts)) }
                table.chartTitle = "Alerts by rule"
                table.summary = ["\(answer.compliantLicenses) licenses compliant, \(answer.violatingLicenses) with violations."]
            case .revenue:
                let answer = try await gateway.call(ReportingMethods.revenueReport, request, credential: key, address: address)
                table.columns = ["Month", "Product", "Payments", "Amount"]
                table.rows = answer.rows.map { [$0.month, $0.productId, "\($0.payments)", Words.money($0.amountMinor, $0.currency)] }
                var byMonth: [String: Double] = [:]
                for row in answer.rows { byMonth[row.month, default: 0] += Double(row.amountMinor) / 100 }
                table.bars = byMonth.sorted { $0.key < $1.key }.map { BarChart.Bar(label: $0.key, value: $0.value) }
                table.chartTitle = "Revenue by month"
                table.summary = answer.recurring.map { "\($0.subscriptions) subscriptions: MRR \(Words.money($0.mrrMinor, $0.currency)), ARR \(Words.money($0.arrMinor, $0.currency))" }
            case .renewals:
                let answer = try await gateway.call(ReportingMethods.renewalPipeline, ReportRequest(from: now, to: now + 90 * 86400, page: PageRequest(pageSize: 1000)), credential: key, address: address)
                table.columns = ["License", "Customer", "Ends", "State", "Renews automatically", "Last payment"]
                table.rows = answer.rows.map {
                    [$0.licenseId, $0.customerName.isEmpty ? $0.customerId : $0.customerName, Words.day($0.expiresAt), Words.state($0.state), $0.autoRenew ? "yes" : "no",
                     $0.lastAmountMinor > 0 ? Words.money($0.lastAmountMinor, $0.currency) : "—"]
                }
                var byWeek: [Int64: Double] = [:]
                for row in answer.rows { byWeek[(row.expiresAt - now) / (7 * 86400), default: 0] += 1 }
                table.bars = byWeek.sorted { $0.key < $1.key }.map { BarChart.Bar(label: "week of \(Words.day(now + $0.key * 7 * 86400))", value: $0.value) }
                table.chartTitle = "Licenses ending, by week, next 90 days"
            }
        } catch let error as RPCError {
            table.error = error.code == .unavailable ? "Reports cannot be shown right now (license-reporting is not answering)." : error.sentence
        } catch {
            table.error = "\(error)"
        }
        return table
    }
}
