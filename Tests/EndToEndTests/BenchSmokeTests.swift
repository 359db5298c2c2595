import Foundation
import LicensingRPC
import Testing

/// license-bench against a real stack, a few hundred calls: the harness cannot rot. Not a
/// timing test: it checks that every call succeeds and the report is well formed.
@Suite(.serialized) struct BenchSmokeTests {
    func bench(_ arguments: [String]) async throws -> (Int32, String) {
        // Waited for on a thread of its own, not one of the few the tests' tasks share.
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                let process = Process()
                process.executableURL = Stack.binaries.appendingPathComponent("license-bench")
                process.arguments = arguments
                // The report on standard output; progress and failures (small) on standard error.
                let pipe = Pipe()
                let errors = Pipe()
                process.standardOutput = pipe
                process.standardError = errors
                do {
                    try process.run()
                    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    process.waitUntilExit()
                    let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    continuation.resume(returning: (process.terminationStatus, process.terminationStatus == 0 ? output : output + errorText))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    @Test func seedsAndMeasuresEveryScenario() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = ["--endpoint", "unix:\(stack.folder)/run/gateway.sock", "--api-key", stack.adminKey]
        let seed = "\(stack.folder)/seed.txt"
        let (seeded, seedOutput) = try await bench(["seed"] + gateway + ["--products", "2", "--licenses", "40", "--out", seed])
        #expect(seeded == 0, "\(seedOutput)")

        let runs: [(String, [String])] = [
            ("validate", ["--endpoint", "unix:\(stack.folder)/run/validation.sock"]),
            ("validate", gateway),
            ("activate", gateway),
            ("checkout+checkin", gateway),
            ("usage", gateway),
            ("issue", gateway),
        ]
        for (scenario, target) in runs {
            let (status, output) = try await bench(["run", scenario] + target + ["--seed", seed, "--count", "100", "--connections", "4", "--warmup", "0", "--json"])
            #expect(status == 0, "\(scenario): \(output)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(scenario): \(output)")
            #expect(report["ok"] as? Int == 100, "\(scenario): \(output)")
            #expect((report["errors"] as? [String: Int])?.isEmpty == true, "\(scenario): \(output)")
            #expect((report["p99_ms"] as? Double ?? -1) >= 0)
        }
        // A constant rate makes as many calls as the timetable has slots.
        let (constant, output) = try await bench(["run", "validate"] + gateway + ["--seed", seed, "--rate", "200", "--duration", "1", "--warmup", "0", "--json"])
        #expect(constant == 0, "\(output)")
        let paced = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(output)")
        #expect((195...201).contains(paced["ok"] as? Int ?? 0), "\(output)")

        // Answers that are not VALID are errors, counted by what they said.
        let text = try String(contentsOfFile: seed, encoding: .utf8).split(separator: "\n")
        let forged = "\(stack.folder)/forged.txt"
        try (text.prefix(2).joined(separator: "\n") + "\nNOT-A-KEY bench-machine-0 lic_none\n").write(toFile: forged, atomically: true, encoding: .utf8)
        let (refused, refusedOutput) = try await bench(["run", "validate"] + gateway + ["--seed", forged, "--count", "20", "--connections", "2", "--warmup", "0", "--json"])
        #expect(refused == 0, "\(refusedOutput)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(refusedOutput.utf8)) as? [String: Any], "\(refusedOutput)")
        #expect(report["ok"] as? Int == 0, "\(refusedOutput)")
        #expect((report["errors"] as? [String: Int]) == ["answered MALFORMED_KEY": 20], "\(refusedOutput)")
    }

    /// The reporting benchmark at a small size: it builds, reports and exports.
    @Test func reportsBenchmarkRebuildsReportsAndExports() async throws {
        let (status, output) = try await bench(["reports", "--licenses", "200", "--events", "20000", "--json"])
        #expect(status == 0, "\(output)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(output)")
        #expect((report["feed_events"] as? Int ?? 0) > 2000, "\(output)")
        #expect((report["export_rows"] as? Int ?? 0) > 200, "\(output)")
        #expect(Set((report["report_ms"] as? [String: Double] ?? [:]).keys) == ["usage", "compliance", "revenue", "renewals"], "\(output)")
    }
}
