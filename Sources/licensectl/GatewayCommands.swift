import ArgumentParser
import Foundation
import LicensingRPC
import LicensingRuntime
import LicensingWire

struct ApiKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apikey", abstract: "API credentials (admins).", subcommands: [Create.self, List.self, Revoke.self])

    static let roles: [String: Role] = [
        "admin": .admin, "issuer": .issuer, "support": .support, "auditor": .auditor, "integration": .integration, "product": .product,
        "console": .console,
    ]

    static func expiry(_ key: ApiKey, now: Int64 = Int64(Date().timeIntervalSince1970)) -> String {
        guard key.expiresAt != 0 else { return "" }
        return key.expiresAt <= now ? "  EXPIRED \(Output.time(key.expiresAt))" : "  expires \(Output.time(key.expiresAt))"
    }

    static func describe(_ key: ApiKey) -> String {
        "\(key.id)  \(key.prefix)...  \(key.role)  tenant \(key.tenantId)  \(key.name)\(key.revokedAt != 0 ? "  REVOKED" : "")\(ApiKeyCommand.expiry(key))"
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key; its secret is shown once.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "What it is for.") var name: String
        @Option(help: "admin, issuer, support, auditor, integration, product or console (license-console's own key).") var role: String
        @Option(help: "Tenant (default: your own).") var tenant: String = ""
        @Option(help: "Expiry: 2027-12-31 or Unix seconds.") var expires: String?
        @Option(help: "Write the secret to this file (mode 0600) instead of printing it.") var secretFile: String?

        func run() async throws {
            guard let role = ApiKeyCommand.roles[role] else { throw ValidationError("--role must be one of \(ApiKeyCommand.roles.keys.sorted().joined(separator: ", "))") }
            let request = CreateApiKeyRequest(name: name, tenantId: tenant, role: role, expiresAt: try expires.map(parseTime) ?? 0)
            let secretFile = self.secretFile
            _ = try await global.run(GatewayMethods.createApiKey, request) { response in
                if let secretFile {
                    do {
                        try Secrets.replacePrivate(response.secret + "\n", at: secretFile)
                        return "secret       written to \(secretFile)\n" + ApiKeyCommand.describe(response.apiKey ?? ApiKey())
                    } catch {
                        // The key exists now: its secret is shown rather than lost.
                        Output.error("cannot write \(secretFile) (\(error)): the secret is printed instead")
                    }
                }
                return "secret       \(response.secret)   (shown once: store it now)\n" + ApiKeyCommand.describe(response.apiKey ?? ApiKey())
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API keys (never their secrets).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this tenant's (operators).") var tenant: String = ""

        func run() async throws {
            _ = try await global.run(GatewayMethods.listApiKeys, ListApiKeysRequest(tenantId: tenant)) { $0.apiKeys.map(ApiKeyCommand.describe).joined(separator: "\n") }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key at once.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Key id.") var id: String

        func run() async throws {
            _ = try await global.run(GatewayMethods.revokeApiKey, GetByIdRequest(id: id)) { ApiKeyCommand.describe($0) }
        }
    }
}

struct SignInLinkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signin-link", abstract: "A single-use link that signs a customer in to the license holders' portal.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Customer id.") var customer: String
    @Option(help: "Hours the link works (default 24, at most 168).") var hours: Int64 = 24
    @Option(help: "The console's address.") var console: String = "https://127.0.0.1:7402"

    func run() async throws {
        guard (1...168).contains(hours) else { throw ValidationError("--hours must be 1 to 168") }
        let console = self.console.hasSuffix("/") ? String(self.console.dropLast()) : self.console
        _ = try await global.run(GatewayMethods.createSignInLink, CreateSignInLinkRequest(customerId: customer, validSeconds: hours * 3600)) { response in
            "link         \(console)/sign-in/link/\(response.token)\nworks until  \(Output.time(response.expiresAt)), once"
        }
    }
}

struct OverviewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "overview", abstract: "A license with its subscription, machines, seats and usage.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "License id (lic_...) or license key.") var license: String

    func run() async throws {
        _ = try await global.run(GatewayMethods.licenseOverview, GetByIdRequest(id: try await global.licenseID(license))) { response in
            var lines: [String] = []
            if let license = response.license { lines.append(Output.license(license)) }
            if let subscription = response.subscription { lines.append(Output.subscription(subscription)) }
            lines.append("in use       \(response.machines.count) machines (\(response.machines.filter { $0.offlineUntil != 0 }.count) by offline file), \(response.seats.count) seats")
            if let usage = response.usage {
                lines.append("usage        " + (usage.features.isEmpty
                    ? "none in the last 30 days"
                    : usage.features.map { "\($0.feature) \($0.quantity)" }.joined(separator: ", ") + " (last 30 days)"))
            }
            for part in response.parts where part.code != .ok {
                lines.append("(\(part.service): \(part.code) \(part.message))")
            }
            return lines.joined(separator: "\n")
        }
    }
}

struct ExportCustomerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-customer", abstract: "GDPR right of access: everything every service holds about a customer, as one JSON document.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Customer id.") var customer: String
    @Option(help: "Write the document to this file (mode 0600) instead of printing it.") var out: String?

    func run() async throws {
        let client = try global.client()
        let answer: GatewayCustomerExport
        do {
            answer = try await client.call(GatewayMethods.exportCustomer, ExportCustomerRequest(customerId: customer), timeout: .seconds(Int64(max(global.timeout, 60))))
        } catch let error as RPCError {
            await client.close()
            Output.error("\(error.code): \(FlagNames.speak(error.message))")
            throw ExitCode(2)
        }
        await client.close()
        if let out {
            guard FileManager.default.createFile(atPath: out, contents: Data(answer.json), attributes: [.posixPermissions: 0o600]) else {
                Output.error("cannot write \(out)")
                throw ExitCode(2)
            }
            print("written to \(out)")
        } else {
            print(String(decoding: answer.json, as: UTF8.self))
        }
        for part in answer.parts { Output.error("\(part.service) did not answer (\(part.code): \(part.message)); its part is missing") }
        if !answer.parts.isEmpty { throw ExitCode(1) }
    }
}

struct EraseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "erase-customer", abstract: "GDPR erasure of a customer's personal data in every service.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Customer id.") var customer: String

    func run() async throws {
        let response = try await global.run(GatewayMethods.eraseCustomer, EraseCustomerRequest(customerId: customer)) { response in
            (response.erased.map { "\($0.service): \($0.recordsErased) records (\($0.detail))" }
                + response.parts.filter { $0.code != .ok }.map { "\($0.service): \($0.code) \($0.message)" }).joined(separator: "\n")
        }
        if response.parts.contains(where: { $0.code != .ok }) { throw ExitCode(1) }
    }
}
