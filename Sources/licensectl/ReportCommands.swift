import ArgumentParser
import Foundation
import LicensingRPC
import LicensingWire

// Reports, from the command line: as an aligned table, as JSON (--json) or CSV (--csv),
// and exports of any size to a file.

struct ReportFilter: ParsableArguments {
    @Option(help: "Only this product (id).") var product: String?
    @Option(help: "Only this customer (id).") var customer: String?
    @Option(parsing: .unconditional, help: "From: 2027-01-01 or Unix seconds (default: 30 days before --to).") var from: String?
    @Option(parsing: .unconditional, help: "To, not included: 2027-02-01 or Unix seconds (default: now).") var to: String?

    func request(days: UInt32 = 0, page: PageRequest? = nil) throws -> ReportRequest {
        ReportRequest(
            productId: product ?? "", customerId: customer ?? "", from: try from.map(parseTime) ?? 0, to: try to.map(parseTime) ?? 0,
            days: days, page: page)
    }
}

/// Columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    return ([header] + rows).map { row in
        row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
            .trimmingCharacters(in: .whitespaces)
    }.joined(separator: "\n")
}

func money(_ minor: Int64, _ currency: String) -> String {
    let sign = minor < 0 ? "-" : ""
    let magnitude = minor.magnitude
    return "\(sign)\(magnitude / 100).\(String(format: "%02d", Int(magnitude % 100))) \(currency)"
}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Usage, compliance, revenue and renewal reports.",
        subcommands: [Usage.self, Compliance.self, Revenue.self, Renewals.self])

    /// `--csv`: the report through Export, printed as CSV.
    static func printCSV(_ global: GlobalOptions, report: String, filter: ReportRequest) async throws {
        let client = try global.client()
        defer { Task { await client.close() } }
        do {
            for try await chunk in try await client.stream(
                ReportingMethods.export, ExportRequest(report: report, format: "csv", filter: filter), timeout: .seconds(global.timeout))
            {
                FileHandle.standardOutput.write(Data(chunk.data))
            }
        } catch let error as RPCError {
            Output.error("\(error.code): \(error.message)")
            throw ExitCode(2)
        }
    }

    static func header(_ header: ReportHeader?) -> String {
        guard let header else { return "" }
        let lag = header.feeds.map { "\($0.feed) \($0.appliedSeq)/\($0.sourceSeq)" }.joined(separator: ", ")
        return "period \(Output.time(header.from)) to \(Output.time(header.to)), produced \(Output.time(header.producedAt))"
            + (lag.isEmpty ? "" : " (feeds applied: \(lag))")
    }

    struct Usage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Per license and feature: quantities, machines and seats at once, validations.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var filter: ReportFilter
        @Flag(help: "CSV (every row, through export).") var csv = false
        @Option(parsing: .unconditional, help: "Licenses per page (1-1000).") var limit: UInt32 = 100
        @Option(help: "The next page: the token the previous page printed.") var page: String?

        func run() async throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be between 1 and 1000") }
            if csv { return try await ReportCommand.printCSV(global, report: "usage", filter: try filter.request()) }
            _ = try await global.run(ReportingMethods.usageReport, try filter.request(page: PageRequest(pageSize: limit, pageToken: page ?? ""))) { report in
                var lines = [
                    ReportCommand.header(report.header),
                    "\(report.activeLicenses) licenses used or validated, \(report.overLimit) over a limit; validations: "
                        + (report.validations.isEmpty ? "none" : report.validations.map { "\($0.reason) \($0.count)" }.joined(separator: ", ")),
                    "",
                ]
                lines.append(table(
                    ["LICENSE", "CUSTOMER", "FEATURE", "QUANTITY", "SEATS PEAK/LIMIT", "MACHINES NOW/PEAK/LIMIT", "VALID", "DENIED", "OVER"],
                    report.rows.map {
                        [
                            $0.licenseId, $0.customerName.isEmpty ? $0.customerId : $0.customerName, $0.feature.isEmpty ? "-" : $0.feature,
                            String($0.quantity), "\($0.peakConcurrent)/\($0.limit == 0 ? "-" : String($0.limit))",
                            "\($0.activeMachines)/\($0.peakMachines)/\($0.maxMachines == 0 ? "-" : String($0.maxMachines))",
                            String($0.validationsValid), String($0.validationsDenied), $0.overLimit ? "yes" : "",
                        ]
                    }))
                if !report.nextPageToken.isEmpty { lines.append("more: --page \(report.nextPageToken)") }
                return lines.joined(separator: "\n")
            }
        }
    }

    struct Compliance: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Licenses out of compliance and why, alerts by rule, license states, the audit chain verified now.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var filter: ReportFilter
        @Flag(help: "CSV of the licenses out of compliance (through export).") var csv = false

        func run() async throws {
            if csv { return try await ReportCommand.printCSV(global, report: "compliance", filter: try filter.request()) }
            _ = try await global.run(ReportingMethods.complianceReport, try filter.request()) { report in
                var lines = [
                    "Compliance audit — " + ReportCommand.header(report.header),
                    "\(report.compliantLicenses) licenses compliant, \(report.violatingLicenses) not",
                    "license states: " + report.licenseStates.map { "\($0.state) \($0.licenses)" }.joined(separator: ", "),
                    "audit chain: " + report.auditDetail,
                    "alerts by rule: " + (report.byRule.isEmpty ? "none" : report.byRule.map { "\($0.rule) \($0.alerts) (\($0.triggers) triggers)" }.joined(separator: ", ")),
                    "",
                ]
                lines.append(table(
                    ["LICENSE", "CUSTOMER", "REASONS"],
                    report.violations.map { [$0.licenseId, $0.customerName.isEmpty ? $0.customerId : $0.customerName, $0.reasons.joined(separator: "; ")] }))
                return lines.joined(separator: "\n")
            }
        }
    }

    struct Revenue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Payments per product, month and currency; recurring revenue; subscription movements.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var filter: ReportFilter
        @Flag(help: "CSV of the payment rows (through export).") var csv = false

        func run() async throws {
            if csv { return try await ReportCommand.printCSV(global, report: "revenue", filter: try filter.request()) }
            _ = try await global.run(ReportingMethods.revenueReport, try filter.request()) { report in
                var lines = [ReportCommand.header(report.header), ""]
                lines.append(table(
                    ["MONTH", "PRODUCT", "AMOUNT", "PAYMENTS"],
                    report.rows.map { [$0.month, $0.productId, money($0.amountMinor, $0.currency), String($0.payments)] }))
                lines.append("")
                lines.append(table(
                    ["CURRENCY", "MRR", "ARR", "SUBSCRIPTIONS"],
                    report.recurring.map { [$0.currency, money($0.mrrMinor, $0.currency), money($0.arrMinor, $0.currency), String($0.subscriptions)] }))
                lines.append("")
                lines.append(table(
                    ["MONTH", "STARTED", "RENEWED", "CHURNED", "FAILED PAYMENTS"],
                    report.movements.map { [$0.month, String($0.started), String($0.renewals), String($0.churned), String($0.failedPayments)] }))
                return lines.joined(separator: "\n")
            }
        }
    }

    struct Renewals: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Licenses and subscriptions ending in the next N days, and those in grace now, soonest first.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this product (id).") var product: String?
        @Option(help: "Only this customer (id).") var customer: String?
        @Option(parsing: .unconditional, help: "Days ahead (1-3650).") var days: UInt32 = 30
        @Flag(help: "CSV (every row, through export).") var csv = false
        @Option(parsing: .unconditional, help: "Rows per page (1-1000).") var limit: UInt32 = 100
        @Option(help: "The next page: the token the previous page printed.") var page: String?

        func run() async throws {
            guard (1...3650).contains(days) else { throw ValidationError("--days must be between 1 and 3650") }
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be between 1 and 1000") }
            let request = ReportRequest(
                productId: product ?? "", customerId: customer ?? "", days: days, page: PageRequest(pageSize: limit, pageToken: page ?? ""))
            if csv { return try await ReportCommand.printCSV(global, report: "renewals", filter: request) }
            _ = try await global.run(ReportingMethods.renewalPipeline, request) { report in
                var lines = ["ending by \(Output.time(report.header?.to ?? 0)), produced \(Output.time(report.header?.producedAt ?? 0))", ""]
                lines.append(table(
                    ["ENDS", "LICENSE", "CUSTOMER", "STATE", "AUTO-RENEW", "LAST PERIOD"],
                    report.rows.map {
                        [
                            Output.time($0.expiresAt) + ($0.inGrace ? " (grace to \(Output.time($0.graceEndsAt)))" : ""), $0.licenseId,
                            $0.customerName.isEmpty ? $0.customerId : $0.customerName, $0.state.description, $0.autoRenew ? "yes" : "no",
                            $0.currency.isEmpty ? "-" : money($0.lastAmountMinor, $0.currency),
                        ]
                    }))
                if !report.nextPageToken.isEmpty { lines.append("more: --page \(report.nextPageToken)") }
                return lines.joined(separator: "\n")
            }
        }
    }
}

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write a whole report to a file as CSV or JSON lines, streamed (any size).")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: ReportFilter
    @Argument(help: "usage, compliance, revenue or renewals.") var report: String
    @Option(help: "csv or jsonl.") var format: String = "csv"
    @Option(help: "The file to write (replaced).") var output: String
    @Option(parsing: .unconditional, help: "Renewals: days ahead (1-3650).") var days: UInt32 = 30

    func run() async throws {
        guard ["usage", "compliance", "revenue", "renewals"].contains(report) else {
            throw ValidationError("the report is usage, compliance, revenue or renewals, not \(report)")
        }
        guard ["csv", "jsonl"].contains(format) else { throw ValidationError("--format is csv or jsonl, not \(format)") }
        guard (1...3650).contains(days) else { throw ValidationError("--days must be between 1 and 3650") }
        guard FileManager.default.createFile(atPath: output, contents: nil), let file = FileHandle(forWritingAtPath: output) else {
            throw ValidationError("cannot write \(output)")
        }
        defer { try? file.close() }
        let client = try global.client()
        defer { Task { await client.close() } }
        var rows = 0
        var bytes = 0
        var lastProgress = ContinuousClock.now
        do {
            // An export may run long: the deadline is an hour unless --timeout says more.
            for try await chunk in try await client.stream(
                ReportingMethods.export, ExportRequest(report: report, format: format, filter: try filter.request(days: days)),
                timeout: .seconds(max(global.timeout, 3600)))
            {
                file.write(Data(chunk.data))
                rows += Int(chunk.rows)
                bytes += chunk.data.count
                if ContinuousClock.now - lastProgress > .seconds(1) {
                    FileHandle.standardError.write(Data("\r\(rows) rows, \(bytes / 1024) KiB".utf8))
                    lastProgress = .now
                }
            }
        } catch let error as RPCError {
            FileHandle.standardError.write(Data("\n".utf8))
            Output.error("\(error.code): \(error.message) (\(output) holds the \(rows) rows written before)")
            throw ExitCode(2)
        }
        FileHandle.standardError.write(Data("\r".utf8))
        print("wrote \(rows) rows (\(bytes) bytes) to \(output)")
    }
}
