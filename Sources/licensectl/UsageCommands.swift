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
                "quantity": 3, "occurred_at": "2027-01-31T12:00:00Z", "user": "ann"} (license_id instead of license_key is \
                accepted; occurred_at may be Unix seconds or left out for now). Up to 1000 events go in one call.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License key (or id) the event is for; not with --file.") var license: String?
        @Option(help: "Feature used.") var feature: String?
        @Option(parsing: .unconditional, help: "How much was used (1 or more).") var quantity: UInt64 = 1
        @Option(help: "Named user.") var user: String = ""
        @Option(help: "Event id (default: a new one); the same id is counted once however often it is sent.") var eventId: String?
        @Option(help: "A JSON-lines file of events.") var file: String?

        func run() async throws {
            let events: [UsageEvent]
            if let file {
                guard license == nil, feature == nil else { throw ValidationError("give either --file or a license and --feature, not both") }
                events = try Self.events(fromFile: file)
            } else {
                guard let license, let feature else { throw ValidationError("give a license and --feature (or --file)") }
                var event = UsageEvent(eventId: eventId ?? UUID().uuidString, feature: feature, quantity: quantity, user: user)
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
                    quantity: (object["quantity"] as? NSNumber)?.uint64Value ?? 1, user: object["user"] as? String ?? "")
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
                    + (summary.features.isEmpty ? ["none"] : summary.features.map { "\($0.feature)  \($0.quantity)  in \($0.events) events" }))
                    .joined(separator: "\n")
            }
        }
    }
}
