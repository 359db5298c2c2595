import ArgumentParser
import Foundation
import LicensingRPC
import LicensingWire

// Feature usage, from the command line: what a product reports, and what was reported.

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "Feature usage: record events, show a license's usage.", subcommands: [Record.self, Show.self])

    struct Record: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record usage events: one from the options, or many from a JSON-lines file. Exit 1 when some were refused.",
            discussion: """
                A JSON-lines file has one event per line: {"event_id": "...", "license_key": "...", "feature": "export", \
                "quantity": 3, "occurred_at": "2027-01-31T12:00:00Z", "user": "ann", "fingerprint": "..."} (license_id instead of license_key is \
                accepted; occurred_at may be Unix seconds or left out for now). Up to 1000 events go in one call.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License key (or id) the event is for; not with --file.") var license: String?
        @Option(help: "Feature used.") var feature: String?
        @Option(parsing: .unconditional, help: "How much was used (1 or more).") var quantity: UInt64 = 1
        @Option(help: "Named user (kept as a pseudonym).") var user: String = ""
        @Option(help: "Machine fingerprint (kept as its hash).") var fingerprint: String = ""
        @Option(help: "Event id (default: a new one); the same id is counted once however often it is sent.") var eventId: String?
        @Option(help: "A JSON-lines file of events.") var file: String?

        func run() async throws {
            let events: [UsageEvent]
            if let file {
                guard license == nil, feature == nil else { throw ValidationError("give either --file or a license and --feature, not both") }
                events = try Self.events(fromFile: file)
            } else {
                guard let license, let feature else { throw ValidationError("give a license and --feature (or --file)") }
                var event = UsageEvent(eventId: eventId ?? UUID().uuidString, feature: feature, quantity: quantity, user: user, fingerprint: fingerprint)
                if license.hasPrefix("lic_") { event.licenseId = license } else { event.licenseKey = license }
                events = [event]
            }
            guard !events.isEmpty else { throw ValidationError("no events to record") }
            var refused = false
            for start in stride(from: 0, to: events.count, by: 1000) {
                let batch = Array(events[start..<min(start + 1000, events.count)])
                let response = try await global.run(UsageMethods.recordUsage, RecordUsageRequest(events: batch)) { response in
                    (["recorded \(response.accepted), already recorded \(response.duplicates), refused \(response.rejected.count)"]
                        + response.rejected.map { "event \(start + Int($0.index) + 1) (\($0.eventId.isEmpty ? "no id" : $0.eventId)): \($0.reason)" })
                        .joined(separator: "\n")
                }
                refused = refused || !response.rejected.isEmpty
            }
            if refused { throw ExitCode(1) }
        }

        static func events(fromFile path: String) throws -> [UsageEvent] {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read \(path): \(FileManager.default.fileExists(atPath: path) ? "it is not UTF-8 text" : "there is no such file")")
            }
            var events: [UsageEvent] = []
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.isEmpty { continue }
                guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                    throw ValidationError("\(path):\(number + 1): not a JSON object")
                }
                var event = UsageEvent(
                    eventId: object["event_id"] as? String ?? "", licenseKey: object["license_key"] as? String ?? "",
                    licenseId: object["license_id"] as? String ?? "", feature: object["feature"] as? String ?? "",
                    quantity: (object["quantity"] as? NSNumber)?.uint64Value ?? 1, user: object["user"] as? String ?? "",
                    fingerprint: object["fingerprint"] as? String ?? "")
                if let seconds = object["occurred_at"] as? NSNumber {
                    event.occurredAt = seconds.int64Value
                } else if let date = object["occurred_at"] as? String {
                    event.occurredAt = try parseTime(date)
                }
                events.append(event)
            }
            return events
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A license's usage per feature (default: the last 30 days).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String
        @Option(parsing: .unconditional, help: "From: 2027-01-01 or Unix seconds.") var from: String?
        @Option(parsing: .unconditional, help: "To (not included): 2027-02-01 or Unix seconds.") var to: String?

        func run() async throws {
            let request = GetUsageRequest(licenseId: try await global.licenseID(license), from: try from.map(parseTime) ?? 0, to: try to.map(parseTime) ?? 0)
            _ = try await global.run(UsageMethods.getUsage, request) { summary in
                (["usage of \(summary.licenseId) from \(Output.time(summary.from)) to \(Output.time(summary.to))"]
                    + (summary.features.isEmpty ? ["none"] : summary.features.map(Self.line))
                    + ["peak seats held at once \(summary.peakConcurrent), peak machines \(summary.peakMachines)"])
                    .joined(separator: "\n")
            }
        }

        static func line(_ usage: FeatureUsage) -> String {
            var line = "\(usage.feature)  \(usage.quantity)  in \(usage.events) events, \(usage.distinctUsers) users, \(usage.distinctMachines) machines"
            if usage.quota > 0 {
                line += "; quota \(usage.quotaUsed) of \(usage.quota) this \(usage.quotaPeriod)\(usage.quotaExceeded ? " — EXCEEDED" : "")"
            }
            return line
        }
    }
}

struct QuotaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quota", abstract: "Metered quotas per license and feature, or a policy's default.", subcommands: [Set.self, List.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a quota (0 removes it). Past it plus the license's overage allowance, validation answers QUOTA_EXCEEDED for the feature until the period ends (UTC).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or key; or leave out and give --policy.") var license: String?
        @Option(help: "Policy id: the default quota of every license of the policy.") var policy: String?
        @Option(help: "Feature the quota counts.") var feature: String
        @Option(parsing: .unconditional, help: "Quantity allowed per period (0 removes the quota).") var limit: UInt64
        @Option(help: "day, month or total (UTC calendar).") var period: String = "month"

        func run() async throws {
            guard (license == nil) != (policy == nil) else { throw ValidationError("give a license or --policy, not both") }
            let request = SetQuotaRequest(
                licenseId: try await license.asyncMap { try await global.licenseID($0) } ?? "", feature: feature, limit: limit, period: period,
                policyId: policy ?? "")
            _ = try await global.run(UsageMethods.setQuota, request) { quota in
                let owner = quota.policyId.isEmpty ? "license \(quota.licenseId)" : "policy \(quota.policyId)"
                guard quota.limit > 0 else { return "quota on \(quota.feature) of \(owner) removed" }
                return "quota on \(quota.feature) of \(owner): \(quota.limit) per \(quota.period)" + QuotaCommand.state(quota)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Quotas of a license (with what it used), of a policy, or all of them.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or key.") var license: String?
        @Option(help: "Policy id.") var policy: String?

        func run() async throws {
            let request = ListQuotasRequest(licenseId: try await license.asyncMap { try await global.licenseID($0) } ?? "", policyId: policy ?? "")
            _ = try await global.run(UsageMethods.listQuotas, request) { response in
                response.quotas.isEmpty ? "no quotas" : response.quotas.map { quota in
                    let owner = quota.policyId.isEmpty ? quota.licenseId : "policy \(quota.policyId)"
                    return "\(owner)  \(quota.feature)  \(quota.limit) per \(quota.period)" + QuotaCommand.state(quota)
                }.joined(separator: "\n")
            }
        }
    }

    static func state(_ quota: Quota) -> String {
        guard !quota.licenseId.isEmpty, quota.limit > 0 else { return "" }
        let ends = quota.periodEndsAt == 0 ? "" : ", period ends \(Output.time(quota.periodEndsAt))"
        return "; used \(quota.used)\(quota.exceeded ? ", EXCEEDED" : "")\(ends)"
    }
}

struct AlertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alerts", abstract: "Compliance alerts: list them, acknowledge one.", subcommands: [List.self, Ack.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open alerts, newest first (or acknowledged ones, or all).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Only this license (id or key).") var license: String?
        @Option(help: "Only this rule: seat-overuse, machine-churn, fingerprint-sharing, country-sharing, denied-region, use-after-end, quota-exceeded, clock-tamper.")
        var rule: String?
        @Flag(help: "Acknowledged alerts too.") var all = false
        @Flag(help: "Acknowledged alerts only.") var acknowledged = false
        @Option(parsing: .unconditional, help: "At most this many (1-1000).") var limit: UInt32 = 100

        func run() async throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be between 1 and 1000") }
            let request = ListAlertsRequest(
                licenseId: try await license.asyncMap { try await global.licenseID($0) } ?? "", includeAcknowledged: all,
                page: PageRequest(pageSize: limit), rule: rule ?? "", acknowledgedOnly: acknowledged)
            _ = try await global.run(UsageMethods.listAlerts, request) { response in
                response.alerts.isEmpty ? "no alerts" : response.alerts.map(AlertsCommand.line).joined(separator: "\n")
            }
        }
    }

    struct Ack: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Acknowledge an alert: it closes, and the next trigger opens a new one.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Alert id (alert_...).") var id: String

        func run() async throws {
            _ = try await global.run(UsageMethods.acknowledgeAlert, GetByIdRequest(id: id)) { alert in
                "acknowledged by \(alert.acknowledgedBy) at \(Output.time(alert.acknowledgedAt))\n" + AlertsCommand.line(alert)
            }
        }
    }

    static func line(_ alert: ComplianceAlert) -> String {
        let state = alert.acknowledged ? "acknowledged" : "open"
        return "\(alert.id)  \(alert.rule)  \(alert.licenseId)  \(state)  ×\(alert.count)  first \(Output.time(alert.raisedAt)), last \(Output.time(alert.lastSeenAt))\n    \(alert.detail)"
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
