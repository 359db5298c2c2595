import Foundation
import Testing

/// deploy/soak-report judges a soak run: it must call steady figures steady, and catch a
/// figure that keeps growing or a failed call (a judge that cannot fail proves nothing).
@Suite struct SoakReportTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/soak-report").standardized.path

    func judge(_ rows: [[String: Double]]) async throws -> (Int32, String) {
        let folder = NSTemporaryDirectory() + "lm-soak-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let columns = ["minute"] + ["issuance", "validation", "usage", "reporting", "gateway"].flatMap {
            ["\($0)_rss_kib", "\($0)_fds", "\($0)_db_kib", "\($0)_wal_kib"]
        } + ["validate_per_s", "validate_p99_ms", "errors"]
        let lines = [columns.joined(separator: ",")] + rows.map { row in columns.map { "\(row[$0] ?? 0)" }.joined(separator: ",") }
        try lines.joined(separator: "\n").write(toFile: "\(folder)/soak.csv", atomically: true, encoding: .utf8)
        let (status, output) = try await Stack.run("/usr/bin/python3", [Self.script, "\(folder)/soak.csv", "\(folder)/soak.svg"], absolute: true)
        if status == 0 {
            let plot = try String(contentsOfFile: "\(folder)/soak.svg", encoding: .utf8)
            #expect(plot.hasPrefix("<svg") && plot.contains("polyline"), "no plot")
        }
        return (status, output)
    }

    func rows(_ count: Int, _ change: (Int, inout [String: Double]) -> Void = { _, _ in }) -> [[String: Double]] {
        (1...count).map { minute in
            var row: [String: Double] = ["minute": Double(minute), "validate_per_s": 5000, "validate_p99_ms": 0.8]
            for service in ["issuance", "validation", "usage", "reporting", "gateway"] {
                row["\(service)_rss_kib"] = 60_000 + Double(minute % 3) * 500
                row["\(service)_fds"] = 40
                row["\(service)_db_kib"] = 1000 * Double(minute)
                row["\(service)_wal_kib"] = 4000
            }
            change(minute, &row)
            return row
        }
    }

    @Test func steadyFiguresPassAndAGrowingDatabaseIsNotALeak() async throws {
        let (status, output) = try await judge(rows(30))
        #expect(status == 0, "\(output)")
        #expect(output.contains("stayed bounded"))
    }

    @Test func latencyThatKeepsGrowingFailsAndLatencyThatSwingsDoesNot() async throws {
        let (status, output) = try await judge(rows(30) { minute, row in row["validate_p99_ms"] = 0.8 + Double(minute) * 5 })
        #expect(status == 1)
        #expect(output.contains("validate p99 kept growing"), "\(output)")
        // Swings of a shared machine (10 ms to 1.3 s, in no order) are not a trend.
        let swings: [Double] = [250, 12, 700, 1330, 400, 110, 217, 160, 12, 194, 25, 90, 600, 30, 15]
        let (steady, said) = try await judge(rows(30) { minute, row in row["validate_p99_ms"] = swings[minute % swings.count] })
        #expect(steady == 0, "\(said)")
    }

    @Test func memoryThatKeepsGrowingFails() async throws {
        let (status, output) = try await judge(rows(30) { minute, row in row["gateway_rss_kib"] = 60_000 + Double(minute) * 2_000 })
        #expect(status == 1)
        #expect(output.contains("gateway_rss_kib grew"), "\(output)")
    }

    @Test func leakedDescriptorsAndFailedCallsFail() async throws {
        let (status, output) = try await judge(rows(30) { minute, row in
            row["validation_fds"] = 40 + Double(minute) * 2
            if minute == 29 { row["errors"] = 3 }
        })
        #expect(status == 1)
        #expect(output.contains("validation_fds grew") && output.contains("3 calls failed"), "\(output)")
    }
}
