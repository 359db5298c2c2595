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

    @Option(help: "Validation's read replicas, for validations: host:port list, or dns:NAME:PORT for every address NAME resolves to (a Kubernetes headless Service).")
    var validationReplicas: String?

    @Option(help: "Usage endpoint (default: unix:<data>/run/usage.sock).")
    var usage: String?

    @Option(help: "Reporting endpoint (default: unix:<data>/run/reporting.sock).")
    var reporting: String?

    @Option(help: "Integrations endpoint (default: unix:<data>/run/integrations.sock).")
    var integrations: String?

    @Option(help: "CA (PEM) of the services' TLS certificates, for services on TCP.")
    var backendCa: String?

    @Option(help: "Client certificate (PEM) the gateway presents to services (mutual TLS).")
    var backendCert: String?

    @Option(help: "Key (PEM) of --backend-cert.")
    var backendKey: String?

    @Option(help: "Where to write the first admin API key when none exists (default in --dev: <data>/secrets/admin-api-key).")
    var adminKeyFile: String?

    @Option(help: "Serve TCP without TLS (loopback test setups only; the default in --dev).")
    var allowPlaintextTcp: Bool?

    func run() async throws {
        let flags: [String: String?] = [
            "issuance": issuance, "validation": validation, "usage": usage, "reporting": reporting, "integrations": integrations, "backend-ca": backendCa,
            "backend-cert": backendCert, "backend-key": backendKey, "admin-key-file": adminKeyFile,
            "allow-plaintext-tcp": allowPlaintextTcp.map { String($0) }, "validation-replicas": validationReplicas,
        ]
        try await ServiceRunner.run(GatewayService.self, options: runtime, extraFlags: flags)
    }
}
