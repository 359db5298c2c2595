import ArgumentParser
import ValidationService
import LicensingRuntime

@main
struct LicenseValidationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-validation",
        abstract: "Validates license keys from a replica fed by issuance's change feed.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_LISTEN, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "Issuance endpoint whose change feed to follow (default: unix:<data>/run/issuance.sock).")
    var issuance: String?

    @Option(help: "primary (default) owns activations, machines, seats and the validation log; replica answers validations from its own copy and forwards the rest to --primary.")
    var role: String?

    @Option(help: "For --role replica: the validation primary's endpoint.")
    var primary: String?

    func run() async throws {
        try await ServiceRunner.run(
            ValidationService.self, options: runtime, extraFlags: ["issuance": issuance, "role": role, "primary": primary])
    }
}
