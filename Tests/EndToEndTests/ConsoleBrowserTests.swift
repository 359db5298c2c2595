import Foundation
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The console in real headless Chromium (Debian's chromium and chromium-driver, Selenium
/// from PyPI, installed by deploy/install-deps): the journeys in Tests/ui/console_journeys.py,
/// against a stack seeded here. Screenshots land in .build/console-screenshots.
@Suite(.serialized) struct ConsoleBrowserTests {
    @Test func holdersAndOperatorsInARealBrowser() async throws {
        let fixture = try await ConsoleFixture.make(productName: "<script>alert(1)</script>")
        _ = try await fixture.activate(fixture.license, "fp-browser-1")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shots = root.appendingPathComponent(".build/console-screenshots").path
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        let venv = (ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/license-manager/ui-venv/bin/python"
        #expect(FileManager.default.fileExists(atPath: venv), "run deploy/install-deps: Selenium's virtual environment is missing")
        let environment = [
            "CONSOLE_URL": fixture.console, "SCREENSHOTS": shots, "LICENSE_ID": fixture.license.license!.id,
            "OTHER_LICENSE_ID": fixture.other.license!.id, "KEY_PREFIX": fixture.license.license!.keyPrefix,
            "HOLDER_KEY": fixture.license.licenseKey, "ISSUER_KEY": try await fixture.key(.issuer),
            "SUPPORT_KEY": try await fixture.key(.support), "AUDITOR_KEY": try await fixture.key(.auditor),
        ]
        let (status, output) = try await Stack.run(
            venv, [root.appendingPathComponent("Tests/ui/console_journeys.py").path], environment: environment, absolute: true)
        #expect(status == 0, "browser journeys failed:\n\(output)")
        #expect(FileManager.default.fileExists(atPath: shots + "/holder-portal.png") && FileManager.default.fileExists(atPath: shots + "/operator-license.png"))
    }
}
