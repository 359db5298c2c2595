import ArgumentParser
import IssuanceService
import LicensingRuntime

@main
struct LicenseIssuanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-issuance",
        abstract: "Products, policies, customers and licenses: the system of record, and its change feed.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_LISTEN, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    func run() async throws {
        try await ServiceRunner.run(IssuanceService.self, options: runtime, extraFlags: [:])
    }
}
