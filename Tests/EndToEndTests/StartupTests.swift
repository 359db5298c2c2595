import Foundation
import Testing

/// A service given a setting it cannot use stops at once and says which and why.
@Suite struct StartupTests {
    @Test(arguments: [["--event-loops", "0"], ["--event-loops", "many"], ["--event-loops", "1000"]])
    func aServiceRefusesEventLoopsItCannotRun(_ arguments: [String]) throws {
        let folder = NSTemporaryDirectory() + "lm-startup-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (status, output) = try Stack.run("license-usage", ["--data-dir", folder, "--dev", "true"] + arguments)
        #expect(status != 0, "\(output)")
        #expect(output.contains("event-loops"), "\(output)")
    }
}
