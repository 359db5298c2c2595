import ArgumentParser
import GatewayService
import LicensingRuntime

@main
struct LicenseGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-gateway",
        abstract: "The front door: routes every public method to the service that owns it.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_LISTEN, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "Issuance endpoint (default: unix:<data>/run/issuance.sock).")
    var issuance: String?

    @Option(help: "Validation endpoint (default: unix:<data>/run/validation.sock).")
    var validation: String?

    @Option(help: "Usage endpoint (default: unix:<data>/run/usage.sock).")
    var usage: String?

    @Option(help: "Reporting endpoint (default: unix:<data>/run/reporting.sock).")
    var reporting: String?

    func run() async throws {
        try await ServiceRunner.run(name: "gateway", options: runtime, extraFlags: ["issuance": issuance, "validation": validation, "usage": usage, "reporting": reporting]) { environment in
            try GatewayService.services(environment)
        }
    }
}
