import ArgumentParser
import Foundation
import LicensingRPC
import LicensingWire

extension ProductCommand {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a product.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Product id.") var product: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.getProduct, GetByIdRequest(id: product)) { "product \($0.id)  \($0.code)  \($0.name)\n\($0.description)" }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rename or describe a product.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Product id.") var product: String
        @Option(help: "New name.") var name: String = ""
        @Option(help: "New description.") var description: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.updateProduct, UpdateProductRequest(id: product, name: name, description: description)) {
                "product \($0.id)  \($0.code)  \($0.name)"
            }
        }
    }
}

extension PolicyCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List policies.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this product's.") var product: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.listPolicies, ListPoliciesRequest(productId: product)) { response in
                response.policies.map { "\($0.id)  \($0.licenseType)  \($0.name)  product \($0.productId)" }.joined(separator: "\n")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a policy.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Policy id.") var policy: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.getPolicy, GetByIdRequest(id: policy)) { policy in
                """
                policy       \(policy.id)  \(policy.name)
                type         \(policy.licenseType)
                duration     \(policy.durationSeconds == 0 ? "perpetual" : "\(policy.durationSeconds / 86400) days")
                grace        \(policy.graceSeconds / 86400) days
                limits       machines \(policy.maxMachines), users \(policy.maxUsers), seats \(policy.maxSeats), overage \(Double(policy.overagePermille) / 1000)x
                features     \(policy.features.joined(separator: ", "))
                regions      allowed \(policy.allowedRegions.joined(separator: ",")) denied \(policy.deniedRegions.joined(separator: ","))
                """
            }
        }
    }
}

extension CustomerCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List customers.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only the one with this CRM id.") var crmId: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: crmId)) { response in
                response.customers.map { "\($0.id)  \($0.name)  \($0.email)\($0.crmId.isEmpty ? "" : "  crm \($0.crmId)")" }.joined(separator: "\n")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a customer.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Customer id.") var customer: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.getCustomer, GetByIdRequest(id: customer)) {
                "customer \($0.id)  \($0.name)  \($0.email)\($0.enterprise ? "  enterprise" : "")\($0.crmId.isEmpty ? "" : "  crm \($0.crmId)")"
            }
        }
    }
}

struct DepartmentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "department", abstract: "Departments of enterprise customers.", subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a department with its own quotas.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Enterprise customer id.") var customer: String
        @Option(help: "Name.") var name: String
        @Option(help: "ERP cost centre.") var costCenter: String = ""
        @Option(parsing: .unconditional, help: "Seats for the department (0 = no own quota).") var maxSeats: UInt32 = 0
        @Option(parsing: .unconditional, help: "Machines for the department (0 = no own quota).") var maxMachines: UInt32 = 0

        func run() async throws {
            let request = CreateDepartmentRequest(customerId: customer, name: name, costCenter: costCenter, maxSeats: maxSeats, maxMachines: maxMachines)
            _ = try await global.run(IssuanceMethods.createDepartment, request) { "department \($0.id)  \($0.name)" }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a customer's departments.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Customer id.") var customer: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.listDepartments, GetByIdRequest(id: customer)) { response in
                response.departments.map { "\($0.id)  \($0.name)  cost centre \($0.costCenter)  seats \($0.maxSeats)  machines \($0.maxMachines)" }
                    .joined(separator: "\n")
            }
        }
    }
}

extension LicenseCommand {
    struct Renew: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Extend a license by its policy's period, or to a date.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(parsing: .unconditional, help: "New expiry: 2027-12-31 or Unix seconds.") var to: String?

        func run() async throws {
            let request = RenewLicenseRequest(id: try await global.licenseID(license), extendTo: try to.map(parseTime) ?? 0)
            _ = try await global.run(IssuanceMethods.renewLicense, request) { "license \($0.id) \($0.state), expires \(Output.time($0.expiresAt))" }
        }
    }

    struct Change: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a license's entitlements or quotas.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(help: "Comma-separated features to add (or the whole set, with --replace).") var features: String?
        @Flag(help: "Replace the feature set instead of adding.") var replace = false
        @Option(parsing: .unconditional, help: "New machine limit: a number, or unlimited.") var maxMachines: String?
        @Option(parsing: .unconditional, help: "New named-user limit: a number, or unlimited.") var maxUsers: String?
        @Option(parsing: .unconditional, help: "New seat limit: a number, or unlimited.") var maxSeats: String?

        func run() async throws {
            let machines = try parseLimit(maxMachines, "--max-machines")
            let users = try parseLimit(maxUsers, "--max-users")
            let seats = try parseLimit(maxSeats, "--max-seats")
            guard features != nil || replace || maxMachines != nil || maxUsers != nil || maxSeats != nil else {
                throw ValidationError("nothing to change: give --features, --replace, --max-machines, --max-users or --max-seats")
            }
            let request = ChangeEntitlementsRequest(
                id: try await global.licenseID(license), features: parseList(features), maxMachines: machines.limit, maxUsers: users.limit,
                maxSeats: seats.limit, replaceFeatures: replace, unlimitedMachines: machines.unlimited, unlimitedUsers: users.unlimited,
                unlimitedSeats: seats.unlimited)
            _ = try await global.run(IssuanceMethods.changeEntitlements, request) { Output.license($0) }
        }
    }

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move a license to another customer.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(parsing: .unconditional, help: "Customer id.") var to: String
        @Option(help: "Department id of that customer.") var department: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.transferLicense, TransferLicenseRequest(id: try await global.licenseID(license), toCustomerId: to, toDepartmentId: department)) {
                "license \($0.id) now belongs to \($0.customerId)"
            }
        }
    }

    struct Assign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Assign a named user to a per-user license.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Argument(help: "User.") var user: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.assignUser, AssignUserRequest(id: try await global.licenseID(license), user: user)) { "users \($0.namedUsers.joined(separator: ", "))" }
        }
    }

    struct Unassign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a named user from a license.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Argument(help: "User.") var user: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.unassignUser, AssignUserRequest(id: try await global.licenseID(license), user: user)) { "users \($0.namedUsers.joined(separator: ", "))" }
        }
    }
}

struct SubscriptionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscription", abstract: "Subscriptions: what billing reports.", subcommands: [Show.self, Pay.self, Fail.self, Cancel.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a subscription by its id or its license's id.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Subscription or license id.") var id: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.getSubscription, GetByIdRequest(id: id)) { Output.subscription($0) }
        }
    }

    struct Pay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record a paid period; the license runs to its end.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Billing reference.") var billingRef: String
        @Option(help: "The billing system's payment id (recorded once).") var paymentId: String
        @Option(parsing: .unconditional, help: "Period start: 2027-01-01 or Unix seconds.") var from: String
        @Option(parsing: .unconditional, help: "Period end: 2027-02-01 or Unix seconds.") var to: String
        @Option(parsing: .unconditional, help: "Amount in minor units (cents).") var amount: Int64 = 0
        @Option(help: "ISO currency code.") var currency: String = ""

        func run() async throws {
            let request = RecordPaymentRequest(
                billingRef: billingRef, periodStart: try parseTime(from), periodEnd: try parseTime(to), amountMinor: amount, currency: currency, paymentId: paymentId)
            _ = try await global.run(IssuanceMethods.recordPayment, request) { Output.subscription($0) }
        }
    }

    struct Fail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record a failed payment; the license enters its grace period.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Billing reference.") var billingRef: String
        @Option(help: "Why.") var reason: String = ""

        func run() async throws {
            _ = try await global.run(IssuanceMethods.recordPaymentFailure, RecordPaymentFailureRequest(billingRef: billingRef, reason: reason)) { Output.subscription($0) }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel: the license ends with the paid period, or now.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Billing reference.") var billingRef: String
        @Flag(help: "End the license now, without grace.") var immediately = false

        func run() async throws {
            _ = try await global.run(IssuanceMethods.cancelSubscription, CancelSubscriptionRequest(billingRef: billingRef, immediately: immediately)) { Output.subscription($0) }
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "Certificate signing keys.", subcommands: [List.self, Rotate.self, Retire.self])

    static func describe(_ key: SigningKey) -> String {
        "\(key.kid)  \(key.algorithm)  created \(Output.time(key.createdAt))\(key.current ? "  current" : "")\(key.retiredAt != 0 ? "  retired" : "")"
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The public keys that verify certificates (--json for the key set).")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            _ = try await global.run(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()) { $0.keys.map(KeysCommand.describe).joined(separator: "\n") }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a new current key; older keys keep verifying until retired.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            _ = try await global.run(IssuanceMethods.rotateSigningKey, CreateSigningKeyRequest()) { KeysCommand.describe($0) }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a key from verifying.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Key id.") var kid: String

        func run() async throws {
            _ = try await global.run(IssuanceMethods.retireSigningKey, GetByIdRequest(id: kid)) { KeysCommand.describe($0) }
        }
    }
}

struct CertificateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "certificate", abstract: "Signed license certificates.", subcommands: [Issue.self])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a signed certificate of a license.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(help: "Bind to this machine fingerprint.") var fingerprint: String = ""
        @Option(parsing: .unconditional, help: "Validity, e.g. 30d (default: until the license ends).") var valid: String = "0"

        func run() async throws {
            let request = IssueCertificateRequest(licenseId: try await global.licenseID(license), fingerprint: fingerprint, validSeconds: try parseDuration(valid))
            _ = try await global.run(IssuanceMethods.issueCertificate, request) { $0.armored }
        }
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "The hash-chained audit log.", subcommands: [List.self, Verify.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List audit events.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Start after this sequence number.") var after: UInt64 = 0
        @Option(parsing: .unconditional, help: "At most this many.") var limit: UInt32 = 100

        func run() async throws {
            _ = try await global.run(IssuanceMethods.listAuditEvents, ListAuditEventsRequest(afterSeq: after, limit: limit)) { response in
                response.events.map { "\($0.seq)  \(Output.time($0.occurredAt))  \($0.actor)  \($0.action)  \($0.target)" }.joined(separator: "\n")
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check the whole chain; exit 1 and name the first broken row if it is not intact.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let response = try await global.run(IssuanceMethods.verifyAuditChain, VerifyAuditChainRequest()) { response in
                response.intact
                    ? "intact: \(response.rowsChecked) rows"
                    : "BROKEN at row \(response.firstBrokenSeq): \(response.detail)"
            }
            if !response.intact { throw ExitCode(1) }
        }
    }
}
