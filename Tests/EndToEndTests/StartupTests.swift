import Foundation
import Testing

/// A service given a setting it cannot use stops at once and says which and why.
@Suite struct StartupTests {
    @Test(arguments: [["--event-loops", "0"], ["--event-loops", "many"], ["--event-loops", "1000"]])
    func aServiceRefusesEventLoopsItCannotRun(_ arguments: [String]) throws {
        let folder = NSTemporaryDirectory() + "lm-startup-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let process = Process()
        process.executableURL = Stack.binaries.appendingPathComponent("license-usage")
        process.arguments = ["--data-dir", folder, "--dev", "true"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0, "\(output)")
        #expect(output.contains("event-loops"), "\(output)")
    }
}
