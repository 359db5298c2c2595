import Foundation
import GRDB
import LicensingCore
import LicensingRuntime
import LicensingWire
import ServiceLifecycle

/// Moves licenses through time-driven states on schedule — active → in grace → expired —
/// and publishes each move on the change feed; also drops expired idempotency records.
/// Decisions never wait for it (they derive the state from the dates), but the feed,
/// reports and lists show the stored state, so it runs every few seconds.
final class ExpiryScheduler: Service, Sendable {
    private let service: IssuanceService
    private let interval: Duration

    init(service: IssuanceService, interval: Duration) {
        self.service = service
        self.interval = interval
    }

    func run() async throws {
        await Periodically.run(every: interval) {
            do {
                _ = try await service.applyTimeTransitions()
            } catch {
                service.logger.error("expiry scheduler failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }
}

extension IssuanceService {
    /// The scheduler for a service run in-process (tests with a manual clock).
    public func expiryScheduler(interval: Duration) -> any Service {
        ExpiryScheduler(service: self, interval: interval)
    }

    /// Applies every due transition; returns how many licenses moved.
    @discardableResult
    func applyTimeTransitions(batch: Int = 500) async throws -> Int {
        var moved = 0
        while true {
            let now = clock.now
            let count = try await write { db -> Int in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT id, tenant_id FROM license
                        WHERE expires_at > 0 AND expires_at <= ? AND (state = ? OR (state = ? AND expires_at + grace_seconds <= ?))
                        LIMIT ?
                        """,
                    arguments: [now, LicenseState.active.rawValue, LicenseState.inGrace.rawValue, now, batch])
                for row in rows {
                    var record = try StoredLicense.require(db, id: row["id"], tenant: row["tenant_id"], vault: self.vault)
                    let next = record.stateByTime(at: now)
                    guard next != record.license.state else { continue }
                    record.license.state = next
                    _ = try record.save(action: next == .inGrace ? "license.grace_started" : "license.expired", at: now, in: db)
                }
                try db.execute(sql: "DELETE FROM idempotency WHERE expires_at <= ?", arguments: [now])
                return rows.count
            }
            moved += count
            if count < batch { return moved }
        }
    }
}
