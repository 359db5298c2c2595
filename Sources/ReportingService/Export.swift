import Synchronization
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire
import Metrics

// Export: any report as CSV (RFC 4180, a header row) or JSON lines, streamed in chunks of
// about 64 KiB. Rows are read a page at a time, so a report of millions of rows never sits
// in memory; a cancelled call stops the work at the next page.

/// Rows written as CSV or JSON lines into a buffer that is handed out in chunks.
struct ExportWriter {
    enum Format: String { case csv, jsonl }
    let format: Format
    let columns: [String]
    private(set) var buffer: [UInt8] = []
    private(set) var rows = 0

    init(format: Format, columns: [String]) {
        self.format = format
        self.columns = columns
        buffer.reserveCapacity(Self.chunkSize + 4096)
        if format == .csv { line(columns.map(Self.csvField)) }
    }

    static let chunkSize = 64 * 1024

    enum Value {
        case text(String)
        case number(Int64)
        case flag(Bool)
    }

    mutating func add(_ values: [Value]) {
        rows += 1
        switch format {
        case .csv:
            line(values.map {
                switch $0 {
                case .text(let text): Self.csvField(Self.defused(text))
                case .number(let number): String(number)
                case .flag(let flag): flag ? "true" : "false"
                }
            })
        case .jsonl:
            var object = "{"
            for (index, (column, value)) in zip(columns, values).enumerated() {
                if index > 0 { object += "," }
                object += Self.jsonString(column) + ":"
                switch value {
                case .text(let text): object += Self.jsonString(text)
                case .number(let number): object += String(number)
                case .flag(let flag): object += flag ? "true" : "false"
                }
            }
            buffer += Array((object + "}\n").utf8)
        }
    }

    /// Takes what is buffered, when at least a chunk (or `all`).
    mutating func take(all: Bool = false) -> ExportChunk? {
        guard buffer.count >= Self.chunkSize || (all && (!buffer.isEmpty || rows > 0)) else { return nil }
        defer {
            buffer.removeAll(keepingCapacity: true)
            rows = 0
        }
        return ExportChunk(data: buffer, rows: UInt32(clamping: rows))
    }

    private mutating func line(_ fields: [String]) {
        buffer += Array((fields.joined(separator: ",") + "\r\n").utf8)
    }

    /// RFC 4180: a field with a comma, a quote or a line break is quoted, quotes doubled.
    static func csvField(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// A text cell a spreadsheet would run as a formula (a name such as `=HYPERLINK(…)`)
    /// is written with a leading apostrophe, so opening an export runs nothing.
    static func defused(_ text: String) -> String {
        guard let first = text.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) else { return text }
        return "'" + text
    }

    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Exports running now and rows sent, for operators (`reporting_exports_running`,
/// `reporting_export_rows_total`) and for tests that check a cancelled export stops.
public final class ExportActivity: Sendable {
    private let state = Mutex((running: 0, rows: 0))
    private let runningGauge = Gauge(label: "reporting_exports_running")
    private let rowsCounter = Counter(label: "reporting_export_rows_total")

    public var running: Int { state.withLock { $0.running } }
    public var rowsSent: Int { state.withLock { $0.rows } }

    func started() { runningGauge.record(state.withLock { $0.running += 1; return $0.running }) }
    func ended() { runningGauge.record(state.withLock { $0.running -= 1; return $0.running }) }
    func sent(_ rows: Int) {
        state.withLock { $0.rows += rows }
        rowsCounter.increment(by: rows)
    }
}

extension ReportingService {
    public func export(_ request: ExportRequest, _ call: ServerCall, _ stream: TypedResponseStream<ExportChunk>) async throws {
        exports.started()
        defer { exports.ended() }
        let stream = CountingStream(stream: stream, activity: exports)
        guard let format = ExportWriter.Format(rawValue: request.format.isEmpty ? "csv" : request.format) else {
            throw RPCError.invalidArgument("format must be csv or jsonl, not \(RPCError.quoted(request.format, limit: 20))")
        }
        let now = clock.now
        var filter = request.filter ?? ReportRequest()
        filter.page = PageRequest(pageSize: 1000)
        let scope = try ReportScope(filter, call, now: now)
        let names = CustomerNames(issuance: issuance, database: database)
        switch request.report {
        case "usage":
            var writer = ExportWriter(format: format, columns: [
                "license_id", "product_id", "customer_id", "customer_name", "feature", "quantity", "events", "peak_concurrent", "seat_limit",
                "active_machines", "peak_machines", "max_machines", "validations_valid", "validations_denied", "over_limit",
            ])
            var token = ""
            let (firstDay, endDay) = scope.days
            repeat {
                try Task.checkCancellation()
                let after = token
                let rows = try await database.read { db -> ([UsageReportRow], String) in
                    let licenses = try Row.fetchAll(
                        db, sql: Self.activeLicenses + " ORDER BY l.id LIMIT ?7", arguments: scope.arguments([firstDay, endDay, after, 1000]))
                    return (try Self.usageRows(licenses, firstDay, endDay, in: db), licenses.count == 1000 ? licenses.last!["id"] : "")
                }
                for row in rows.0 {
                    writer.add([
                        .text(row.licenseId), .text(row.productId), .text(row.customerId), .text(await names.name(row.customerId)), .text(row.feature),
                        .number(Int64(clamping: row.quantity)), .number(Int64(clamping: row.events)), .number(Int64(row.peakConcurrent)),
                        .number(Int64(row.limit)), .number(Int64(row.activeMachines)), .number(Int64(row.peakMachines)), .number(Int64(row.maxMachines)),
                        .number(Int64(clamping: row.validationsValid)), .number(Int64(clamping: row.validationsDenied)), .flag(row.overLimit),
                    ])
                    if let chunk = writer.take() { try await stream.send(chunk) }
                }
                token = rows.1
            } while !token.isEmpty
            if let chunk = writer.take(all: true) { try await stream.send(chunk) }
        case "renewals":
            var writer = ExportWriter(format: format, columns: [
                "license_id", "product_id", "customer_id", "customer_name", "ends_at", "grace_ends_at", "in_grace", "state", "auto_renew",
                "subscription_id", "last_amount_minor", "currency",
            ])
            let days = Int64(filter.days == 0 ? 30 : min(filter.days, 3650))
            var page = scope
            repeat {
                try Task.checkCancellation()
                let current = page
                let response = try await database.read { db in try Self.renewalPipeline(current, now: now, days: days, in: db) }
                for row in response.rows {
                    writer.add([
                        .text(row.licenseId), .text(row.productId), .text(row.customerId), .text(await names.name(row.customerId)),
                        .text(ISODate.format(row.expiresAt)), .text(ISODate.format(row.graceEndsAt)), .flag(row.inGrace), .text(row.state.description),
                        .flag(row.autoRenew), .text(row.subscriptionId), .number(row.lastAmountMinor), .text(row.currency),
                    ])
                    if let chunk = writer.take() { try await stream.send(chunk) }
                }
                page = page.next(response.nextPageToken)
            } while !page.pageToken.isEmpty
            if let chunk = writer.take(all: true) { try await stream.send(chunk) }
        case "compliance":
            var writer = ExportWriter(format: format, columns: ["license_id", "product_id", "customer_id", "customer_name", "reasons"])
            let report = try await database.read { db in try Self.complianceReport(scope, in: db) }
            for violation in report.violations {
                try Task.checkCancellation()
                writer.add([
                    .text(violation.licenseId), .text(violation.productId), .text(violation.customerId), .text(await names.name(violation.customerId)),
                    .text(violation.reasons.joined(separator: "; ")),
                ])
                if let chunk = writer.take() { try await stream.send(chunk) }
            }
            if let chunk = writer.take(all: true) { try await stream.send(chunk) }
        case "revenue":
            var writer = ExportWriter(format: format, columns: ["month", "product_id", "currency", "amount_minor", "payments"])
            let report = try await database.read { db in try Self.revenueReport(scope, now: now, in: db) }
            for row in report.rows {
                writer.add([.text(row.month), .text(row.productId), .text(row.currency), .number(row.amountMinor), .number(Int64(row.payments))])
                if let chunk = writer.take() { try await stream.send(chunk) }
            }
            if let chunk = writer.take(all: true) { try await stream.send(chunk) }
        default:
            throw RPCError.invalidArgument("report must be usage, compliance, revenue or renewals, not \(RPCError.quoted(request.report, limit: 20))")
        }
    }
}

/// Counts the rows of each chunk sent.
struct CountingStream: Sendable {
    let stream: TypedResponseStream<ExportChunk>
    let activity: ExportActivity

    func send(_ chunk: ExportChunk) async throws {
        try await stream.send(chunk)
        activity.sent(Int(chunk.rows))
    }
}

extension ReportScope {
    /// The same scope, at the page after `token` ("" when there is none).
    func next(_ token: String) -> ReportScope {
        ReportScope(copying: self, pageToken: token)
    }

    init(copying other: ReportScope, pageToken: String) {
        self.tenant = other.tenant
        self.product = other.product
        self.customer = other.customer
        self.from = other.from
        self.to = other.to
        self.pageSize = other.pageSize
        self.pageToken = pageToken
    }
}
