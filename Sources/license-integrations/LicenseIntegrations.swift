import ArgumentParser
import IntegrationsService
import LicensingRuntime

@main
struct LicenseIntegrationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-integrations",
        abstract: "The HTTP edge to billing, CRM and ERP: inbound signed webhooks, outbound webhooks from a durable outbox.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_LISTEN, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "host:port of the webhook listener (default 127.0.0.1:7401; port 0 picks a free one).")
    var httpListen: String?

    @Option(help: "Issuance endpoint (default: unix:<data>/run/issuance.sock).")
    var issuance: String?

    @Option(help: "Validation endpoint (default: unix:<data>/run/validation.sock).")
    var validation: String?

    @Option(help: "Usage endpoint (default: unix:<data>/run/usage.sock).")
    var usage: String?

    func run() async throws {
        try await ServiceRunner.run(
            IntegrationsService.self, options: runtime,
            extraFlags: ["http-listen": httpListen, "issuance": issuance, "validation": validation, "usage": usage])
    }
}
