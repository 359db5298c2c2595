import ArgumentParser
import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "health", abstract: "Show every service's health and feed lag.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let response = try await global.run(GatewayMethods.health, HealthCheckRequest()) { response in
            response.components.map { part in
                guard part.code == .ok, let health = part.health else {
                    return "\(part.name.padding(toLength: max(12, part.name.count), withPad: " ", startingAt: 0)) \(part.code): \(part.message)"
                }
                var line = "\(part.name.padding(toLength: max(12, part.name.count), withPad: " ", startingAt: 0)) \(health.status)  up \(health.uptimeSeconds)s"
                for feed in health.feeds {
                    line += "  feed \(feed.feed): applied \(feed.appliedSeq) of \(feed.sourceSeq)"
                }
                for problem in health.problems { line += "\n             problem: \(problem)" }
                if !part.message.isEmpty { line += "\n             \(part.message)" }
                return line
            }.joined(separator: "\n")
        }
        if response.components.contains(where: { $0.code != .ok }) { throw ExitCode(1) }
    }
}

struct ProductCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "product", abstract: "Products.", subcommands: [Create.self, List.self, Show.self, Update.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a product.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Display name.") var name: String
        @Option(help: "Short unique code, A-Z 0-9 - _.") var code: String
        @Option(help: "Description.") var description: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.createProduct, CreateProductRequest(name: name, code: code, description: description)) {
                "product \($0.id)  \($0.code)  \($0.name)"
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List products.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            _ = try await global.run(IssuanceMethods.listProducts, ListProductsRequest()) { response in
                response.products.map { "\($0.id)  \($0.code)  \($0.name)" }.joined(separator: "\n")
            }
        }
    }
}

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "policy", abstract: "Policies: the templates licenses are issued from.", subcommands: [Create.self, List.self, Show.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a policy for a product.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Product id.") var product: String
        @Option(help: "Display name.") var name: String
        @Option(help: "per-user, per-device, subscription or enterprise.") var type: String = "per-device"
        @Option(parsing: .unconditional, help: "How long a license runs: 365d, 12h, or perpetual.") var duration: String = "perpetual"
        @Option(parsing: .unconditional, help: "Grace period after expiry, e.g. 14d.") var grace: String = "0"
        @Option(parsing: .unconditional, help: "Machines per license (0 = unlimited).") var maxMachines: UInt32 = 0
        @Option(parsing: .unconditional, help: "Named users per license (0 = unlimited).") var maxUsers: UInt32 = 0
        @Option(parsing: .unconditional, help: "Concurrent seats per license (0 = unlimited).") var maxSeats: UInt32 = 0
        @Option(help: "Comma-separated features.") var features: String?
        @Option(help: "Comma-separated ISO country codes allowed.") var allowRegions: String?
        @Option(help: "Comma-separated ISO country codes denied.") var denyRegions: String?
        @Option(parsing: .unconditional, help: "Overage allowance: 1, 1.25, 1.5, 2 ...") var overage: Double = 1

        func run() async throws {
            let types: [String: LicenseType] = [
                "per-user": .perUser, "per-device": .perDevice, "subscription": .subscription, "enterprise": .enterprise,
            ]
            guard let licenseType = types[type] else {
                throw ValidationError("--type must be per-user, per-device, subscription or enterprise")
            }
            guard overage.isFinite, (1...100).contains(overage) else {
                throw ValidationError("--overage is a multiple of the limits from 1 (none) to 100, such as 1.25; not \(overage)")
            }
            let policy = Policy(
                productId: product, name: name, licenseType: licenseType,
                durationSeconds: try parseDuration(duration), graceSeconds: try parseDuration(grace),
                maxMachines: maxMachines, maxUsers: maxUsers, maxSeats: maxSeats, features: parseList(features),
                allowedRegions: parseList(allowRegions), deniedRegions: parseList(denyRegions),
                overagePermille: UInt32((overage * 1000).rounded()))
            _ = try await global.run(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: policy)) {
                "policy \($0.id)  \($0.name)  \($0.licenseType)"
            }
        }
    }
}

struct CustomerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "customer", abstract: "Customers.", subcommands: [Create.self, List.self, Show.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a customer.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Name.") var name: String
        @Option(help: "E-mail address.") var email: String = ""
        @Option(help: "The CRM's id of the customer.") var crmId: String = ""
        @Flag(help: "An enterprise customer, with departments.") var enterprise = false

        func run() async throws {
            _ = try await global.run(IssuanceMethods.createCustomer, CreateCustomerRequest(name: name, email: email, crmId: crmId, enterprise: enterprise)) {
                "customer \($0.id)  \($0.name)"
            }
        }
    }
}

struct LicenseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license", abstract: "Licenses.",
        subcommands: [
            Issue.self, Show.self, List.self, Revoke.self, Suspend.self, Reinstate.self, Renew.self, Change.self, Transfer.self,
            Assign.self, Unassign.self,
        ])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a license from a policy; prints its key once.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Policy id.") var policy: String
        @Option(help: "Customer id.") var customer: String
        @Option(help: "Comma-separated features instead of the policy's.") var features: String?
        @Option(parsing: .unconditional, help: "Machines instead of the policy's limit.") var maxMachines: UInt32 = 0
        @Option(help: "Enterprise department id.") var department: String = ""
        @Option(help: "Expiry instead of the policy's: 2027-12-31 or Unix seconds.") var expires: String?
        @Option(help: "Subscription licenses: the billing system's reference.") var billingRef: String = ""
        @Option(parsing: .unconditional, help: "Subscription price per period in minor units.") var amount: Int64 = 0
        @Option(help: "ISO currency code of --amount.") var currency: String = ""

        func run() async throws {
            let request = IssueLicenseRequest(
                policyId: policy, customerId: customer, departmentId: department,
                overrides: LicenseOverrides(expiresAt: try expires.map(parseTime) ?? 0, maxMachines: maxMachines, features: parseList(features)),
                billingRef: billingRef, amountMinor: amount, currency: currency)
            _ = try await global.run(IssuanceMethods.issueLicense, request) { response in
                "key          \(response.licenseKey)\n" + Output.license(response.license ?? License())
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a license by id or by key.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String

        func run() async throws {
            let request = try GlobalOptions.licenseReference(license)
            _ = try await global.run(IssuanceMethods.getLicense, request) { Output.license($0) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List licenses.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this customer's.") var customer: String = ""
        @Option(help: "Only this product's.") var product: String = ""
        @Option(help: "active, in-grace, expired, suspended or revoked.") var state: String?
        @Option(parsing: .unconditional, help: "Page size.") var limit: UInt32 = 100
        @Option(help: "Page token from a previous page.") var pageToken: String = ""

        func run() async throws {
            let states: [String: LicenseState] = ["active": .active, "in-grace": .inGrace, "expired": .expired, "suspended": .suspended, "revoked": .revoked]
            var stateFilter = LicenseState.unspecified
            if let state {
                guard let known = states[state] else { throw ValidationError("--state must be one of \(states.keys.sorted().joined(separator: ", "))") }
                stateFilter = known
            }
            let request = ListLicensesRequest(customerId: customer, productId: product, state: stateFilter, page: PageRequest(pageSize: limit, pageToken: pageToken))
            _ = try await global.run(IssuanceMethods.listLicenses, request) { response in
                var lines = response.licenses.map { "\($0.id)  \($0.state)  \($0.keyPrefix)...  customer \($0.customerId)  expires \(Output.time($0.expiresAt))" }
                if !response.nextPageToken.isEmpty { lines.append("more: --page-token \(response.nextPageToken)") }
                return lines.isEmpty ? "no licenses" : lines.joined(separator: "\n")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a license. Final.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(help: "Why, for the record.") var reason: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: try await global.licenseID(license), reason: reason)) { "license \($0.id) \($0.state)" }
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Suspend a license until reinstated.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(help: "Why, for the record.") var reason: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: try await global.licenseID(license), reason: reason)) { "license \($0.id) \($0.state)" }
        }
    }

    struct Reinstate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reinstate a suspended license.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: try await global.licenseID(license))) { "license \($0.id) \($0.state)" }
        }
    }
}

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate", abstract: "Validate a license key. Exit 0 when valid, 1 when not, 2 when it cannot be asked (a malformed key included).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The license key.") var key: String
    @Option(help: "Machine fingerprint.") var fingerprint: String = ""
    @Option(help: "Feature to check the entitlement of.") var feature: String = ""
    @Option(help: "ISO country code the product runs in.") var region: String = ""
    @Option(help: "Named user (per-user licenses).") var user: String = ""
    @Flag(help: "Ask for a signed answer (with a fresh nonce) and verify it against the public key set, as a product would.")
    var nonce = false

    func run() async throws {
        let sent = nonce ? (0..<16).map { _ in UInt8.random(in: 0...255) } : []
        let response = try await global.run(
            ValidationMethods.validate,
            ValidateRequest(licenseKey: key, fingerprint: fingerprint, feature: feature, user: user, region: region, nonce: sent)
        ) { response in
            var text = "\(response.reason)"
            if !response.licenseId.isEmpty { text += "  license \(response.licenseId)  expires \(Output.time(response.expiresAt))" }
            if !response.detail.isEmpty { text += "\n\(response.detail)" }
            return text
        }
        if response.reason == .malformedKey { throw ExitCode(2) }
        if nonce {
            let client = try global.client()
            defer { Task { await client.close() } }
            let set = try await client.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest(), timeout: .seconds(global.timeout))
            let keys = Dictionary(uniqueKeysWithValues: set.keys.map { ($0.kid, $0.publicKey) })
            do {
                _ = try ValidationAnswer.verify(response, nonce: sent, publicKeys: keys, now: Int64(Date().timeIntervalSince1970))
                if !global.json { print("signed answer verified (key \(response.kid))") }
            } catch {
                Output.error("the answer does not verify: \(error)")
                throw ExitCode(2)
            }
        }
        if !response.valid { throw ExitCode(1) }
    }
}
