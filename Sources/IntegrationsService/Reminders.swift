import Foundation
import GRDB
import LicensingCore
import LicensingRuntime
import LicensingRPC
import LicensingWire
import Logging
import Metrics
import ServiceLifecycle

/// Renewal reminders by e-mail: for each license with an end date, a reminder the days its
/// policy's schedule names before the end (default 30, 7, 1), when grace starts and when it
/// ends — each step once per end date, so a renewal (a new end date) starts the schedule
/// again and the old one's steps are not sent. When several steps are due at once (a
/// license issued with five days left), only the latest goes out. The customer's address is
/// asked from issuance at sending time; nothing personal is stored here. Each reminder also
/// goes out as a `license.expiring` webhook.
final class Reminders: Service, Sendable {
    struct Options: Sendable {
        var days: [Int] = [30, 7, 1]
        var renewalURL = "https://example.com/renew?license={license_id}"
        var interval: Duration = .seconds(60)
        var attempts = 3
    }

    private let database: DatabasePool
    private let issuance: RPCClient
    private let mailer: (any Mailer)?
    private let options: Options
    private let clock: any LicenseClock
    private let logger: Logger
    private let sent = Counter(label: "integrations_reminders_total", dimensions: [("outcome", "sent")])
    private let failed = Counter(label: "integrations_reminders_total", dimensions: [("outcome", "failed")])

    init(database: DatabasePool, issuance: RPCClient, mailer: (any Mailer)?, options: Options, clock: any LicenseClock, logger: Logger) {
        self.database = database
        self.issuance = issuance
        self.mailer = mailer
        self.options = options
        self.clock = clock
        self.logger = logger
    }

    func run() async throws {
        guard mailer != nil else {
            logger.notice("no smtp-host set: renewal reminders are not sent by e-mail (webhooks still go out)")
            return try await sleepUntilShutdown()
        }
        await Periodically.run(every: options.interval) {
            do {
                try await sendDue()
            } catch {
                logger.notice("renewal reminders failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    private func sleepUntilShutdown() async throws {
        try? await gracefulShutdown()
    }

    struct Step: Sendable, Equatable {
        let name: String
        let at: Int64
    }

    /// The steps of a license's schedule for its current end date, in time order.
    static func steps(expiresAt: Int64, grace: Int64, days: [Int]) -> [Step] {
        var steps = days.sorted(by: >).map { Step(name: "\($0)d", at: expiresAt - Int64($0) * 86400) }
        if grace > 0 { steps.append(Step(name: "grace", at: expiresAt)) }
        steps.append(Step(name: "ended", at: expiresAt + max(grace, 0)))
        return steps
    }

    /// Sends every reminder that is due now.
    func sendDue() async throws {
        let now = clock.now
        let horizon = Int64((options.days.max() ?? 30)) * 86400
        let licenses = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT l.*, o.days, o.renewal_url FROM license_ref l LEFT JOIN renewal_option o ON o.tenant_id = l.tenant_id AND o.policy_id = l.policy_id
                    WHERE l.expires_at > 0 AND l.state IN (1, 2, 3) AND l.expires_at - ? <= ? AND l.expires_at + l.grace_seconds + 86400 > ?
                    """,
                arguments: [horizon, now, now])
        }
        for license in licenses {
            let days = (license["days"] as String?).map { $0.split(separator: ",").compactMap { Int($0) } } ?? options.days
            let expires: Int64 = license["expires_at"]
            let steps = Self.steps(expiresAt: expires, grace: license["grace_seconds"], days: days)
            let due = steps.filter { $0.at <= now }
            guard let latest = due.last else { continue }
            let id: String = license["license_id"]
            let done = try await database.read { db in
                // A step that failed is tried again on later rounds, up to ten attempts in all.
                // An end date moved by less than a day (a failed payment starts grace from
                // the failure, not from the period's end) is the same end: its steps are not
                // sent again; a renewal moves it by a period and starts the schedule anew.
                Set(try String.fetchAll(
                    db, sql: "SELECT step FROM reminder WHERE license_id = ? AND abs(expires_at - ?) < 86400 AND (status != 'failed' OR attempts >= 10)",
                    arguments: [id, expires]))
            }
            guard !done.contains(latest.name) else { continue }
            // Steps passed while none could be sent are skipped, not sent late all at once.
            let skipped = due.dropLast().filter { !done.contains($0.name) }
            let tenant: String = license["tenant_id"]
            try await database.write { db in
                for step in skipped {
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO reminder (license_id, step, expires_at, tenant_id, status) VALUES (?, ?, ?, ?, 'skipped')",
                        arguments: [id, step.name, expires, tenant])
                }
            }
            await send(latest, license: license, url: (license["renewal_url"] as String?) ?? options.renewalURL, now: now)
        }
    }

    private func send(_ step: Step, license: Row, url: String, now: Int64) async {
        let id: String = license["license_id"]
        let tenant: String = license["tenant_id"]
        let customerID: String = license["customer_id"]
        let productID: String = license["product_id"]
        let featureList: String = license["features"]
        let expires: Int64 = license["expires_at"]
        let grace: Int64 = license["grace_seconds"]
        var error = ""
        var attempts = 0
        do {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.tenant] = tenant
            let customer = try await issuance.call(IssuanceMethods.getCustomer, GetByIdRequest(id: customerID), metadata: metadata, timeout: .seconds(10))
            let product = try? await issuance.call(IssuanceMethods.getProduct, GetByIdRequest(id: productID), metadata: metadata, timeout: .seconds(10))
            guard !customer.email.isEmpty else { throw RPCError.failedPrecondition("customer \(customer.id) has no e-mail address") }
            let features = featureList.split(separator: ",").map(String.init)
            let daysLeft = max(0, (expires - now + 86399) / 86400)
            let values: [String: Any] = [
                "license_id": id, "product": product?.name ?? "your", "expires": ISODate.day(expires), "grace_ends": ISODate.day(expires + grace),
                "days_left": daysLeft, "one_day": daysLeft == 1, "expiring": step.name != "grace" && step.name != "ended", "in_grace": step.name == "grace",
                "ended": step.name == "ended", "has_features": !features.isEmpty,
                "features": features.enumerated().map { ["name": $1, "last": $0 == features.count - 1] },
                "renewal_url": url.replacingOccurrences(of: "{license_id}", with: id),
            ]
            let rendered = ReminderTemplates.render(values)
            let message = MailMessage(to: customer.email, subject: rendered.subject, text: rendered.text, html: rendered.html)
            var lastError: (any Error)?
            for attempt in 1...options.attempts {
                attempts = attempt
                do {
                    try await mailer?.send(message)
                    lastError = nil
                    break
                } catch let failure {
                    lastError = failure
                    if attempt < options.attempts { try? await Task.sleep(for: .seconds(attempt)) }
                }
            }
            if let lastError { throw lastError }
            // The reminder also goes out as a webhook.
            try await database.write { db in
                try Outbox.write(
                    [Outbox.Event(
                        id: "evt_reminder_\(id)_\(step.name)_\(expires)", tenant: tenant, type: "license.expiring", customer: customerID,
                        data: ["license_id": id, "step": step.name, "days_left": Int(daysLeft), "expires_at": ISODate.format(expires)], at: now)],
                    now: now, in: db)
            }
        } catch let failure {
            error = "\(failure)"
        }
        if error.isEmpty { sent.increment() } else {
            failed.increment()
            logger.warning("renewal reminder not sent", metadata: ["license": "\(id)", "step": "\(step.name)", "error": "\(error)"])
        }
        let (status, tried, failure) = (error.isEmpty ? "sent" : "failed", attempts, error)
        do {
            try await database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO reminder (license_id, step, expires_at, tenant_id, status, attempts, sent_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(license_id, step, expires_at) DO UPDATE SET status = excluded.status, attempts = reminder.attempts + excluded.attempts,
                            sent_at = excluded.sent_at, error = excluded.error
                        """,
                    arguments: [id, step.name, expires, tenant, status, tried, failure.isEmpty ? now : 0, failure])
            }
        } catch {
            logger.error("recording a renewal reminder failed", metadata: ["license": "\(id)", "error": "\(error)"])
        }
    }
}
