import ArgumentParser
import UsageService
import LicensingRuntime

@main
struct LicenseUsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-usage",
        abstract: "Feature usage, metering and compliance alerts.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_LISTEN, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "Validation endpoint, which resolves the licenses events name (default: unix:<data>/run/validation.sock).")
    var validation: String?

    func run() async throws {
        try await ServiceRunner.run(UsageService.self, options: runtime, extraFlags: ["validation": validation])
    }
}
