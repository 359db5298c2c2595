import AsyncHTTPClient
import Foundation
import GRDB
import LicensingCore
import LicensingRuntime
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// Sends the outbox's deliveries: each signed (`LM-Signature: t=…,v1=…`, as README says),
/// retried with exponential backoff and full jitter until the attempt limit, every attempt
/// in the delivery log. An endpoint that has failed for `disableAfter` seconds is disabled
/// and says why. Redirects are not followed. A crash between a receiver's 2xx and the log
/// entry sends that event again: receivers drop a repeated `LM-Event-Id`.
final class Deliverer: Service, Sendable {
    struct Options: Sendable {
        var retryBase: Int64 = 30
        var maxAttempts = 12
        var disableAfter: Int64 = 86400
        var timeout: Int64 = 10
        var interval: Duration = .seconds(1)
        var allowPrivateAddresses = false
    }

    private let database: DatabasePool
    private let options: Options
    private let policy: AddressPolicy
    private let clock: any LicenseClock
    private let logger: Logger
    private let delivered = Counter(label: "integrations_webhook_deliveries_total", dimensions: [("outcome", "delivered")])
    private let failedAttempts = Counter(label: "integrations_webhook_deliveries_total", dimensions: [("outcome", "failed_attempt")])

    init(database: DatabasePool, options: Options, clock: any LicenseClock, logger: Logger) {
        self.database = database
        self.options = options
        self.policy = AddressPolicy(allowPrivate: options.allowPrivateAddresses)
        self.clock = clock
        self.logger = logger
    }

    func run() async throws {
        await Periodically.run(every: options.interval) {
            do {
                try await deliverDue()
            } catch {
                logger.notice("webhook delivery round failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    struct Due: Sendable {
        let id: String
        let attempts: Int
        let endpoint: String
        let url: String
        let secret: String
        let eventId: String
        let type: String
        let payload: String
    }

    static let dueSQL = """
        SELECT d.id, d.attempts, e.id AS endpoint, e.url, e.secret, o.event_id, o.type, o.payload
        FROM delivery d JOIN webhook_endpoint e ON e.id = d.endpoint_id JOIN outbox o ON o.seq = d.outbox_seq
        """

    static func due(_ row: Row) -> Due {
        Due(id: row["id"], attempts: row["attempts"], endpoint: row["endpoint"], url: row["url"], secret: row["secret"], eventId: row["event_id"],
            type: row["type"], payload: row["payload"])
    }

    /// Attempts every delivery that is due, a few at a time.
    func deliverDue() async throws {
        let now = clock.now
        let due = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: Self.dueSQL + """
                     WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= ? AND e.deleted = 0 AND e.disabled_reason = ''
                    ORDER BY d.next_attempt_at LIMIT 64
                    """,
                arguments: [now]
            ).map(Self.due)
        }
        await withTaskGroup(of: Void.self) { group in
            for (index, delivery) in due.enumerated() {
                if index >= 8 { await group.next() }
                group.addTask { await self.attempt(delivery) }
            }
        }
    }

    /// One attempt, recorded.
    func attempt(_ delivery: Due) async {
        let start = ContinuousClock.now
        var status = 0
        var failure = ""
        do {
            status = try await post(delivery)
            if !(200..<300).contains(status) { failure = "the receiver answered \(status)" }
        } catch let refusal as AddressPolicy.Refusal {
            failure = "not sent: \(refusal)"
        } catch {
            failure = "\(error)"
        }
        let elapsed = ContinuousClock.now - start
        let milliseconds = Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        do {
            try await record(delivery, status: status, failure: failure, milliseconds: milliseconds)
        } catch {
            logger.error("recording a webhook delivery failed", metadata: ["delivery": "\(delivery.id)", "error": "\(error)"])
        }
    }

    private func post(_ delivery: Due) async throws -> Int {
        let url = try AddressPolicy.check(url: delivery.url)
        let host = url.host!
        let address = try policy.address(for: host)
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(options.timeout), read: .seconds(options.timeout)))
        configuration.dnsOverride = [host: address]
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        do {
            let body = Array(delivery.payload.utf8)
            var request = HTTPClientRequest(url: delivery.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "license-manager-webhooks/1")
            request.headers.add(name: "LM-Event-Id", value: delivery.eventId)
            request.headers.add(name: "LM-Event-Type", value: delivery.type)
            request.headers.add(name: "LM-Signature", value: WebhookSignature.sign(body, secret: delivery.secret, at: clock.now))
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await client.execute(request, timeout: .seconds(options.timeout))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            try await client.shutdown()
            return Int(response.status.code)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// The wait before attempt `n + 1`: base × 2^(n−1), at most six hours, times a random
    /// factor in [0.5, 1] so receivers that come back are not hit by every sender at once.
    func backoff(afterAttempt attempts: Int) -> Int64 {
        let exponent = min(max(attempts - 1, 0), 30)
        let full = min(options.retryBase.saturatingMultiply(1 << exponent), 6 * 3600)
        return max(1, Int64(Double(full) * Double.random(in: 0.5...1.0)))
    }

    private func record(_ delivery: Due, status: Int, failure: String, milliseconds: Int) async throws {
        let now = clock.now
        let attempts = delivery.attempts + 1
        let delay = backoff(afterAttempt: attempts)
        let (maxAttempts, disableAfter) = (options.maxAttempts, options.disableAfter)
        if failure.isEmpty { delivered.increment() } else { failedAttempts.increment() }
        let disabled = try await database.write { db -> String? in
            try db.execute(
                sql: "INSERT OR REPLACE INTO delivery_attempt (delivery_id, attempt, at, status_code, duration_ms, error) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [delivery.id, attempts, now, status, milliseconds, failure])
            if failure.isEmpty {
                try db.execute(
                    sql: """
                        UPDATE delivery SET status = 'delivered', attempts = ?, last_status_code = ?, last_error = '', last_duration_ms = ?, delivered_at = ?
                        WHERE id = ?
                        """,
                    arguments: [attempts, status, milliseconds, now, delivery.id])
                try db.execute(sql: "UPDATE webhook_endpoint SET failing_since = 0 WHERE id = ?", arguments: [delivery.endpoint])
                return nil
            }
            let gaveUp = attempts >= maxAttempts
            try db.execute(
                sql: """
                    UPDATE delivery SET status = ?, attempts = ?, last_status_code = ?, last_error = ?, last_duration_ms = ?, next_attempt_at = ?
                    WHERE id = ?
                    """,
                arguments: [gaveUp ? "failed" : "retrying", attempts, status, failure, milliseconds, now + delay, delivery.id])
            try db.execute(sql: "UPDATE webhook_endpoint SET failing_since = ? WHERE id = ? AND failing_since = 0", arguments: [now, delivery.endpoint])
            let since = try Int64.fetchOne(db, sql: "SELECT failing_since FROM webhook_endpoint WHERE id = ?", arguments: [delivery.endpoint]) ?? now
            guard now - since >= disableAfter else { return nil }
            let reason = "every delivery since \(ISODate.format(since)) failed (last: \(failure)); disabled at \(ISODate.format(now)) — fix the receiver, then create the endpoint again"
            try db.execute(sql: "UPDATE webhook_endpoint SET disabled_reason = ? WHERE id = ?", arguments: [reason, delivery.endpoint])
            try db.execute(
                sql: "UPDATE delivery SET status = 'failed', last_error = 'the endpoint was disabled' WHERE endpoint_id = ? AND status IN ('pending', 'retrying')",
                arguments: [delivery.endpoint])
            return reason
        }
        if let disabled {
            logger.warning("webhook endpoint disabled", metadata: ["endpoint": "\(delivery.endpoint)", "reason": "\(disabled)"])
        } else if !failure.isEmpty {
            logger.info("webhook delivery failed; will retry", metadata: [
                "delivery": "\(delivery.id)", "attempt": "\(attempts)", "error": "\(failure)", "retry_in_seconds": "\(delay)",
            ])
        }
    }
}

extension Int64 {
    func saturatingMultiply(_ other: Int64) -> Int64 {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? .max : product
    }
}
