import ArgumentParser
import ReportingService
import LicensingRuntime

@main
struct LicenseReportingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-reporting",
        abstract: "Reports built from the other services' feeds.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_LISTEN, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        try await ServiceRunner.run(ReportingService.self, options: runtime, extraFlags: [:])
    }
}
