import ArgumentParser
import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

@main
struct Licensectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "licensectl",
        abstract: "Operate a License Manager stack through its gateway.",
        discussion: """
            With no --gateway, licensectl uses LM_GATEWAY, then the local stack started by deploy/up \
            (<data>/run/gateway.sock, where <data> is LM_DATA_DIR, ./data, or the folder deploy/up last used).
            """,
        subcommands: [
            HealthCommand.self, ProductCommand.self, PolicyCommand.self, CustomerCommand.self, DepartmentCommand.self,
            LicenseCommand.self, SubscriptionCommand.self, KeysCommand.self, CertificateCommand.self, AuditCommand.self,
            ValidateCommand.self, ActivateCommand.self, DeactivateCommand.self, MachinesCommand.self, SeatsCommand.self,
            OfflineFileCommand.self, VerifyFileCommand.self, UsageCommand.self, QuotaCommand.self, AlertsCommand.self, ReportCommand.self, ExportCommand.self, WebhookCommand.self, IntegrationCommand.self, RemindersCommand.self, ApiKeyCommand.self, SignInLinkCommand.self, ImportCommand.self, OverviewCommand.self, BackupCommand.self, RestoreCommand.self, MasterKeyCommand.self, ExportCustomerCommand.self, EraseCommand.self,
        ])

    /// Exit codes, one rule for every command (the README states it):
    ///   0  done; the answer is yes (valid, verified, healthy);
    ///   1  done, and the answer is no: a license not valid or not activated, a limit
    ///      reached, a license file that does not verify, a part of the system down;
    ///   2  not done: a usage error, a malformed value, something not found or refused,
    ///      the gateway unreachable.
    static func main() async {
        // `licensectl help <word>` for a word that names no command is an error, not the overview.
        let words = Array(CommandLine.arguments.dropFirst())
        if words.first == "help", words.count > 1, !configuration.subcommands.contains(where: { $0._commandName == words[1] }) {
            Output.error("there is no command \"\(words[1])\"; licensectl --help lists them")
            exit(withError: ExitCode(2))
        }
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            // Help and version exit 0; usage errors name the subcommand's usage.
            if exitCode(for: error) == .success { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            exit(withError: ExitCode(2))
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ExitCode {
            exit(withError: error)
        } catch where exitCode(for: error) == .success {
            exit(withError: error)  // help asked for
        } catch let error as RPCError {
            Output.error("\(error.code): \(error.message)")
            exit(withError: ExitCode(2))
        } catch let error as ValidationError {
            // A value the command could not use: say which, and how the command is used.
            let usage = usageString(for: type(of: command))
            FileHandle.standardError.write(Data("error: \(error.message)\n\(usage.isEmpty ? "" : "Usage: \(usage)\n")".utf8))
            exit(withError: ExitCode(2))
        } catch {
            Output.error("\(error)")
            exit(withError: ExitCode(2))
        }
    }
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(help: "Gateway endpoint: unix:/path or host:port.")
    var gateway: String?

    @Flag(help: "Print JSON for scripts instead of text for people.")
    var json = false

    @Option(help: "Seconds to wait for an answer.")
    var timeout: Int = 10

    @Option(help: "Makes a change safe to retry: the same key returns the first answer.")
    var idempotencyKey: String?

    @Option(help: "API key (default: LM_API_KEY, or the local stack's admin key).")
    var apiKey: String?

    @Option(help: "CA certificate (PEM) that signed the gateway's TLS certificate; TCP gateways only.")
    var ca: String?

    func client() throws -> RPCClient {
        let endpoint = try Endpoint(parsing: gateway ?? LocalStack.gatewayEndpoint())
        var configuration = RPCClientConfiguration(connections: 1)
        if let credential { configuration.metadata[RPCMetadata.apiKey] = credential }
        if case .tcp = endpoint, let ca = ca ?? ProcessInfo.processInfo.environment["LM_GATEWAY_CA"] ?? LocalStack.file("tls/ca.pem") {
            configuration.tls = try RPCTLS.client(ca: ca)
        }
        return RPCClient(endpoint: endpoint, configuration: configuration)
    }

    /// The credential calls carry.
    var credential: String? {
        if let apiKey { return apiKey }
        if let key = ProcessInfo.processInfo.environment["LM_API_KEY"] { return key }
        return LocalStack.file("secrets/admin-api-key").flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs one call and prints its answer, or the error with exit code 2.
    func run<Request, Response: Encodable>(
        _ method: WireMethod<Request, Response>, _ request: Request, text: (Response) -> String
    ) async throws -> Response {
        let client = try client()
        let result: Result<Response, any Error>
        do {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.idempotencyKey] = idempotencyKey
            result = .success(try await client.call(method, request, metadata: metadata, timeout: .seconds(timeout)))
        } catch {
            result = .failure(error)
        }
        await client.close()
        switch result {
        case .success(let response):
            print(json ? JSONOutput.encode(response) : text(response))
            return response
        case .failure(let error as RPCError):
            Output.error("\(error.code): \(FlagNames.speak(error.message))")
            throw ExitCode(2)
        case .failure(let error):
            throw error
        }
    }
}

extension GlobalOptions {
    /// A license named by its id or by its key, as the request that finds it.
    static func licenseReference(_ text: String) throws -> GetLicenseRequest {
        if text.hasPrefix("lic_") { return GetLicenseRequest(id: text) }
        if (try? LicenseKey(parsing: text)) != nil { return GetLicenseRequest(licenseKey: text) }
        throw ValidationError("\"\(text)\" is neither a license id (lic_...) nor a license key (like 1583-WBTW-4CM1-CBZS-52ZX-5DBW-SZCX)")
    }

    /// The license id for an id or a key: a key is looked up first, so every command that
    /// takes a license accepts both.
    func licenseID(_ text: String) async throws -> String {
        let reference = try Self.licenseReference(text)
        guard reference.id.isEmpty else { return reference.id }
        let client = try client()
        defer { Task { await client.close() } }
        do {
            return try await client.call(IssuanceMethods.getLicense, reference, timeout: .seconds(timeout)).id
        } catch let error as RPCError {
            Output.error("\(error.code): \(error.message)")
            throw ExitCode(2)
        }
    }
}

/// The services name request fields; a person at the command line knows flags. Longest
/// names first, so `policy.max_machines` is not read as `max_machines`.
enum FlagNames {
    static let table: [(String, String)] = [
        ("policy.overage_permille", "--overage"), ("policy.duration_seconds", "--duration"), ("policy.grace_seconds", "--grace"),
        ("policy.check_in_interval_seconds", "--check-in"), ("policy.max_machines", "--max-machines"), ("policy.max_users", "--max-users"),
        ("policy.max_seats", "--max-seats"), ("policy.allowed_regions", "--allow-regions"), ("policy.denied_regions", "--deny-regions"),
        ("policy.features", "--features"), ("overrides.expires_at", "--expires"), ("overrides.max_machines", "--max-machines"),
        ("overrides.features", "--features"), ("extend_to", "--to"), ("valid_seconds", "--valid"), ("amount_minor", "--amount"),
        ("period_start", "--from"), ("period_end", "--to"), ("ttl_seconds", "--ttl"), ("billing_ref", "billing reference"),
        ("payment_id", "--payment-id"), ("to_customer_id", "--to"), ("to_department_id", "--department"), ("max_machines", "--max-machines"),
        ("max_users", "--max-users"), ("max_seats", "--max-seats"), ("expires_at", "--expires"), ("license_key", "license key"),
    ]

    static func speak(_ message: String) -> String {
        table.reduce(message) { text, pair in text.replacingOccurrences(of: pair.0, with: pair.1) }
    }
}

enum LocalStack {
    /// The pointer deploy/up leaves so licensectl finds the stack from any folder.
    static var pointerFile: String {
        let environment = ProcessInfo.processInfo.environment
        let state = environment["XDG_STATE_HOME"] ?? "\(environment["HOME"] ?? "/tmp")/.local/state"
        return "\(state)/license-manager/data-dir"
    }

    static func gatewayEndpoint() -> String {
        if let gateway = ProcessInfo.processInfo.environment["LM_GATEWAY"] { return gateway }
        if let data = dataDirectory { return "unix:\(data)/run/gateway.sock" }
        // Said on stderr, so that a failure that follows is not a mystery.
        FileHandle.standardError.write(Data(
            "licensectl: no local stack found (LM_DATA_DIR, ./data, the folder deploy/up last used); trying 127.0.0.1:7400 (give --gateway, and --ca for TLS)\n".utf8))
        return "127.0.0.1:7400"
    }

    /// The local stack's data folder: LM_DATA_DIR, ./data, or the one deploy/up last used.
    static var dataDirectory: String? {
        let environment = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let data = environment["LM_DATA_DIR"] { candidates.append(data) }
        candidates.append("data")
        if let pointed = try? String(contentsOfFile: pointerFile, encoding: .utf8) {
            candidates.append(pointed.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return candidates.first { FileManager.default.fileExists(atPath: "\($0)/run/gateway.sock") }
    }

    /// A file of the local stack, when there is one.
    static func file(_ relative: String) -> String? {
        guard let data = dataDirectory, FileManager.default.fileExists(atPath: "\(data)/\(relative)") else { return nil }
        return "\(data)/\(relative)"
    }
}

enum Output {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    }

    static func subscription(_ subscription: Subscription) -> String {
        """
        subscription \(subscription.id)
        license      \(subscription.licenseId)
        billing ref  \(subscription.billingRef)
        status       \(subscription.status)\(subscription.autoRenew ? ", renews automatically" : "")
        period       \(time(subscription.periodStart)) to \(time(subscription.periodEnd))
        amount       \(subscription.amountMinor) \(subscription.currency) (minor units)
        """
    }

    static func time(_ seconds: Int64) -> String { ISODate.format(seconds) }

    static func license(_ license: License) -> String {
        """
        license      \(license.id)
        state        \(license.state)\(license.stateReason.isEmpty ? "" : " (\(license.stateReason))")
        type         \(license.licenseType)
        product      \(license.productId)
        policy       \(license.policyId)
        customer     \(license.customerId)
        prefix       \(license.keyPrefix)
        issued       \(time(license.issuedAt))
        expires      \(time(license.expiresAt))
        grace        \(license.graceSeconds / 86400) days
        machines     \(license.maxMachines == 0 ? "unlimited" : String(license.maxMachines))
        seats        \(license.maxSeats == 0 ? "unlimited" : String(license.maxSeats))
        features     \(license.features.isEmpty ? "-" : license.features.joined(separator: ", "))
        users        \(license.namedUsers.isEmpty ? "-" : license.namedUsers.joined(separator: ", "))\(license.maxUsers == 0 ? "" : " (of \(license.maxUsers))")
        """
    }
}

enum JSONOutput {
    static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Parses an ISO 8601 date-time or Unix seconds.
func parseTime(_ text: String) throws -> Int64 {
    if let seconds = Int64(text) { return seconds }
    let formatter = ISO8601DateFormatter()
    if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
    formatter.formatOptions = [.withFullDate]
    if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
    throw ValidationError("\"\(text)\" is not a date such as 2027-01-31 or 2027-01-31T12:00:00Z, nor Unix seconds")
}

/// Parses "30d", "12h", "90m", "3600s" or plain seconds; "0" or "perpetual" = none.
func parseDuration(_ text: String) throws -> Int64 {
    if text == "perpetual" { return 0 }
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400]
    if let last = text.last, let unit = units[last], let value = Int64(text.dropLast()), value >= 0 {
        let (seconds, overflow) = value.multipliedReportingOverflow(by: unit)
        guard !overflow else { throw ValidationError("\"\(text)\" is longer than any duration the service accepts (at most 100 years)") }
        return seconds
    }
    if let value = Int64(text), value >= 0 { return value }
    throw ValidationError("\"\(text)\" is not a duration such as 30d, 12h or 3600")
}

/// A limit as typed: a positive number, or "unlimited" (nil: not given).
func parseLimit(_ text: String?, _ flag: String) throws -> (limit: UInt32, unlimited: Bool) {
    guard let text else { return (0, false) }
    if text == "unlimited" { return (0, true) }
    guard let value = UInt32(text), value > 0 else {
        throw ValidationError("\(flag) takes a number of 1 or more, or unlimited; not \"\(text)\"")
    }
    return (value, false)
}

func parseList(_ text: String?) -> [String] {
    guard let text, !text.isEmpty else { return [] }
    return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
}
