import ArgumentParser
import ConsoleService
import LicensingRuntime

@main
struct LicenseConsoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-console",
        abstract: "The web console: license holders see their licenses; operators run the system with their own API keys.",
        discussion: "Settings come from flags, then LM_* environment variables (LM_DATA_DIR, LM_GATEWAY, ...), then --config.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "host:port of the web listener (default 127.0.0.1:7402; port 0 picks a free one).")
    var httpListen: String?

    @Option(help: "Gateway endpoint (default: unix:<data>/run/gateway.sock).")
    var gateway: String?

    @Option(help: "File holding the console's own CONSOLE API key (default: <data>/secrets/console-api-key).")
    var consoleKeyFile: String?

    func run() async throws {
        try await ServiceRunner.run(
            ConsoleService.self, options: runtime,
            extraFlags: ["http-listen": httpListen, "gateway": gateway, "console-key-file": consoleKeyFile])
    }
}
