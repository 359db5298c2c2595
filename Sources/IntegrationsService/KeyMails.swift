import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import Metrics
import Mustache
import ServiceLifecycle

/// The buyer's e-mail after a purchase: a link to the console that reveals the new
/// license's key once. The key itself never passes through here; the link is kept only
/// until the message is sent (or given up after ten attempts), then emptied.
final class KeyMails: Service, Sendable {
    private let database: DatabasePool
    private let issuance: RPCClient
    private let mailer: (any Mailer)?
    private let consoleURL: String
    private let interval: Duration
    private let clock: any LicenseClock
    private let logger: Logger
    private let sent = Counter(label: "integrations_key_mails_total", dimensions: [("outcome", "sent")])
    private let failed = Counter(label: "integrations_key_mails_total", dimensions: [("outcome", "failed")])
    static let maxAttempts = 10

    init(database: DatabasePool, issuance: RPCClient, mailer: (any Mailer)?, consoleURL: String, interval: Duration, clock: any LicenseClock, logger: Logger) {
        self.database = database
        self.issuance = issuance
        self.mailer = mailer
        self.consoleURL = consoleURL.hasSuffix("/") ? String(consoleURL.dropLast()) : consoleURL
        self.interval = interval
        self.clock = clock
        self.logger = logger
    }

    /// Called when a purchase issued a license; a replayed purchase finds the row there.
    static func enqueue(license: String, tenant: String, customer: String, product: String, token: String, expiresAt: Int64, now: Int64, in database: DatabasePool) async throws {
        guard !license.isEmpty, !token.isEmpty else { return }
        try await database.write { db in
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO key_mail (license_id, tenant_id, customer_id, product_id, reveal_token, expires_at, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [license, tenant, customer, product, token, expiresAt, now])
        }
    }

    func run() async throws {
        guard mailer != nil else {
            logger.notice("no smtp-host set: buyers of a purchase get no key-reveal e-mail")
            try? await gracefulShutdown()
            return
        }
        await Periodically.run(every: interval) {
            do {
                try await sendPending()
            } catch {
                logger.notice("key-reveal e-mails failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    func sendPending() async throws {
        let rows = try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM key_mail WHERE status = 'pending' ORDER BY created_at LIMIT 100")
        }
        for row in rows { await send(row) }
    }

    private func send(_ row: Row) async {
        let license: String = row["license_id"]
        let tenant: String = row["tenant_id"]
        let now = clock.now
        do {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.tenant] = tenant
            let customer = try await issuance.call(IssuanceMethods.getCustomer, GetByIdRequest(id: row["customer_id"]), metadata: metadata, timeout: .seconds(10))
            let product = try? await issuance.call(IssuanceMethods.getProduct, GetByIdRequest(id: row["product_id"]), metadata: metadata, timeout: .seconds(10))
            guard !customer.email.isEmpty else { throw RPCError.failedPrecondition("customer \(customer.id) has no e-mail address") }
            let values: [String: Any] = [
                "product": product?.name ?? "your", "license_id": license, "expires": ISODate.day(row["expires_at"]),
                "reveal_url": "\(consoleURL)/reveal/\(row["reveal_token"] as String)",
            ]
            let subject = Self.library.render(values, withTemplate: "subject")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            try await mailer?.send(
                MailMessage(to: customer.email, subject: subject, text: Self.library.render(values, withTemplate: "text") ?? "",
                            html: Self.library.render(values, withTemplate: "html") ?? ""))
            try await database.write { db in
                try db.execute(sql: "UPDATE key_mail SET status = 'sent', reveal_token = '', sent_at = ?, attempts = attempts + 1 WHERE license_id = ?", arguments: [now, license])
            }
            sent.increment()
            logger.info("key-reveal e-mail sent", metadata: ["license": "\(license)"])
        } catch {
            failed.increment()
            let message = "\(error)"
            logger.warning("key-reveal e-mail failed", metadata: ["license": "\(license)", "error": "\(message)"])
            try? await database.write { db in
                try db.execute(
                    sql: """
                        UPDATE key_mail SET attempts = attempts + 1, error = ?,
                            status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE status END,
                            reveal_token = CASE WHEN attempts + 1 >= ? THEN '' ELSE reveal_token END
                        WHERE license_id = ?
                        """,
                    arguments: [String(message.prefix(500)), Self.maxAttempts, Self.maxAttempts, license])
            }
        }
    }

    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        try! library.register("Your {{product}} license is ready", named: "subject")
        try! library.register(
            """
            Hello,

            thank you for your purchase. Your {{product}} license {{license_id}} is ready.

            Reveal your license key here: {{reveal_url}}

            The link shows the key once and works until {{expires}}. Keep the key somewhere safe:
            it is not in this message, and it cannot be shown again.
            """, named: "text")
        try! library.register(
            """
            <!doctype html>
            <html><body style="font-family: sans-serif">
            <p>Hello,</p>
            <p>thank you for your purchase. Your <strong>{{product}}</strong> license <code>{{license_id}}</code> is ready.</p>
            <p><a href="{{reveal_url}}">Reveal your license key</a></p>
            <p>The link shows the key once and works until {{expires}}. Keep the key somewhere safe: it is not in this message, and it cannot be shown again.</p>
            </body></html>
            """, named: "html")
        return library
    }()
}
