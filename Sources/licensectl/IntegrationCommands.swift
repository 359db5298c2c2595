import ArgumentParser
import Foundation
import LicensingRPC
import LicensingWire

// Integrations, from the command line: outbound webhook endpoints and their deliveries,
// billing price mappings, the secrets inbound webhooks are signed with.

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook", abstract: "Outbound webhooks: endpoints and what was delivered to them.",
        subcommands: [Create.self, List.self, Delete.self, Deliveries.self, Redeliver.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add an endpoint; prints the secret deliveries are signed with, once.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The receiver's URL (https://...).") var url: String
        @Option(help: "Comma-separated event types (default: all): license.issued, license.renewed, license.in_grace, license.expired, license.suspended, license.reinstated, license.revoked, subscription.paid, subscription.payment_failed, subscription.canceled, machine.activated, machine.deactivated, alert.raised.")
        var events: String?

        func run() async throws {
            let types = events.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []
            _ = try await global.run(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: url, eventTypes: types)) { created in
                """
                endpoint \(created.endpoint?.id ?? "") → \(created.endpoint?.url ?? "") (\(types.isEmpty ? "every event" : types.joined(separator: ", ")))
                signing secret (shown once): \(created.secret)
                """
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "This tenant's endpoints.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            _ = try await global.run(IntegrationsMethods.listWebhookEndpoints, ListWebhookEndpointsRequest()) { response in
                response.endpoints.isEmpty ? "no endpoints" : table(
                    ["ID", "URL", "EVENTS", "STATE"],
                    response.endpoints.map {
                        [
                            $0.id, $0.url, $0.eventTypes.isEmpty ? "all" : $0.eventTypes.joined(separator: ","),
                            $0.disabled ? "disabled: \($0.disabledReason)" : $0.failingSince > 0 ? "failing since \(Output.time($0.failingSince))" : "ok",
                        ]
                    })
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove an endpoint; its pending deliveries are dropped.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Endpoint id (whe_...).") var id: String

        func run() async throws {
            _ = try await global.run(IntegrationsMethods.deleteWebhookEndpoint, GetByIdRequest(id: id)) { "endpoint \($0.id) deleted" }
        }
    }

    struct Deliveries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The delivery log, newest first.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this endpoint.") var endpoint: String?
        @Option(help: "pending, retrying, delivered or failed.") var status: String?
        @Option(parsing: .unconditional, help: "At most this many (1-1000).") var limit: UInt32 = 50

        func run() async throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be between 1 and 1000") }
            let request = ListDeliveriesRequest(endpointId: endpoint ?? "", status: status ?? "", page: PageRequest(pageSize: limit))
            _ = try await global.run(IntegrationsMethods.listDeliveries, request) { response in
                response.deliveries.isEmpty ? "no deliveries" : table(
                    ["ID", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST", "WHEN"],
                    response.deliveries.map {
                        [
                            $0.id, $0.eventId, $0.eventType, $0.status, String($0.attempts),
                            $0.lastError.isEmpty ? ($0.lastStatusCode == 0 ? "-" : "\($0.lastStatusCode) in \($0.lastDurationMs) ms") : $0.lastError,
                            $0.status == "delivered" ? Output.time($0.deliveredAt) : $0.status == "retrying" ? "next \(Output.time($0.nextAttemptAt))" : Output.time($0.createdAt),
                        ]
                    })
            }
        }
    }

    struct Redeliver: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a delivery again now (same event id); exit 1 if the receiver did not take it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Delivery id (dlv_...).") var id: String

        func run() async throws {
            let delivery = try await global.run(IntegrationsMethods.redeliver, GetByIdRequest(id: id)) { delivery in
                "\(delivery.id): \(delivery.status) after \(delivery.attempts) attempts" + (delivery.lastError.isEmpty ? "" : " — \(delivery.lastError)")
            }
            if delivery.status != "delivered" { throw ExitCode(1) }
        }
    }
}

struct IntegrationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "integration", abstract: "Billing, CRM and ERP: price mappings and inbound webhook secrets.",
        subcommands: [MapPrice.self, Mappings.self, Secret.self])

    struct MapPrice: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "map-price", abstract: "Issue licenses of a policy for purchases of a billing price (--policy '' removes the mapping).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The billing system's price id (Stripe: price_...).") var price: String
        @Option(help: "Policy id.") var policy: String

        func run() async throws {
            _ = try await global.run(IntegrationsMethods.mapPrice, MapPriceRequest(priceId: price, policyId: policy)) { mapping in
                mapping.policyId.isEmpty ? "price \(mapping.priceId) is no longer mapped" : "price \(mapping.priceId) → policy \(mapping.policyId)"
            }
        }
    }

    struct Mappings: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Price → policy mappings.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            _ = try await global.run(IntegrationsMethods.listPriceMappings, ListPriceMappingsRequest()) { response in
                response.mappings.isEmpty ? "no mappings" : table(["PRICE", "POLICY"], response.mappings.map { [$0.priceId, $0.policyId] })
            }
        }
    }

    struct Secret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inbound webhook secrets.", subcommands: [Rotate.self])

        struct Rotate: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Set the secret a source signs with: Stripe's (give --secret whsec_...), or a new one made for crm or erp. The previous one is accepted for a day.")
            @OptionGroup var global: GlobalOptions
            @Option(help: "stripe, crm or erp.") var source: String
            @Option(help: "Stripe: the endpoint's signing secret from Stripe's dashboard.") var secret: String?

            func run() async throws {
                _ = try await global.run(IntegrationsMethods.rotateInboundSecret, RotateInboundSecretRequest(source: source, secret: secret ?? "")) { rotated in
                    var lines = ["\(rotated.source) webhooks: POST to \(rotated.path) on the integrations listener"]
                    if !rotated.secret.isEmpty { lines.append("signing secret (shown once): \(rotated.secret)") }
                    if rotated.previousValidUntil > 0 { lines.append("the previous secret is accepted until \(Output.time(rotated.previousValidUntil))") }
                    return lines.joined(separator: "\n")
                }
            }
        }
    }
}

struct RemindersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reminders", abstract: "Renewal reminders: what a license is sent, and a policy's schedule.", subcommands: [List.self, Schedule.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A license's reminders for its current end date: sent, failed, skipped, scheduled.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or key.") var license: String

        func run() async throws {
            let request = ListRemindersRequest(licenseId: try await global.licenseID(license))
            _ = try await global.run(IntegrationsMethods.listReminders, request) { response in
                response.reminders.isEmpty ? "the license does not end: no reminders" : table(
                    ["STEP", "DUE", "STATUS", "SENT", "ERROR"],
                    response.reminders.map { [$0.step, Output.time($0.dueAt), $0.status, $0.sentAt == 0 ? "-" : Output.time($0.sentAt), $0.error] })
            }
        }
    }

    struct Schedule: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set when a policy's licenses are reminded, and where they renew.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Policy id.") var policy: String
        @Option(help: "Comma-separated days before expiry (default 30,7,1).") var days: String?
        @Option(help: "Renewal link; {license_id} is replaced by the license's id.") var url: String?

        func run() async throws {
            let parsed = try days.map { text in
                try text.split(separator: ",").map { part -> UInt32 in
                    guard let day = UInt32(part.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--days is a list such as 30,7,1") }
                    return day
                }
            } ?? []
            _ = try await global.run(IntegrationsMethods.setRenewalOptions, RenewalOptions(policyId: policy, days: parsed, renewalUrl: url ?? "")) { options in
                "policy \(options.policyId): reminders \(options.days.map { "\($0)" }.joined(separator: ", ")) days before expiry, when grace starts and ends; renew at \(options.renewalUrl)"
            }
        }
    }
}
