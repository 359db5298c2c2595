import Synchronization
import LicensingWire

/// A floating seat held by this process: a background task heartbeats it at a third of its
/// time to live; `checkin()` stops that and frees the seat. A seat dropped without a
/// check-in stops heartbeating and is freed by the server when its lease runs out.
public final class Seat: Sendable {
    public let lease: SeatLease
    private let client: LicenseClient
    private let key: String
    private let heartbeat: Mutex<Task<Void, Never>?>
    /// The last heartbeat's failure, if the seat could not be kept.
    private let lost = Mutex<LicenseClientError?>(nil)

    init(client: LicenseClient, key: String, lease: SeatLease) {
        self.client = client
        self.key = key
        self.lease = lease
        self.heartbeat = Mutex(nil)
        let ttl = max(lease.expiresAt - lease.acquiredAt, 3)
        // The task holds the seat weakly: a seat dropped without a check-in ends it.
        let task = Task { [weak self, client, key, lease] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(Double(ttl) / 3))
                if Task.isCancelled { return }
                do throws(LicenseClientError) {
                    let answer = try await client.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: lease.leaseId, licenseKey: key))
                    self?.lost.withLock { $0 = answer.reason == .valid ? nil : LicenseClientError(.failedPrecondition, "the seat was lost: \(answer.reason)") }
                } catch {
                    self?.lost.withLock { $0 = error }
                }
            }
        }
        heartbeat.withLock { $0 = task }
    }

    deinit {
        heartbeat.withLock { $0?.cancel() }
    }

    /// Nil while the seat is held; why it was lost otherwise.
    public var problem: LicenseClientError? { lost.withLock { $0 } }

    /// Frees the seat now.
    public func checkin() async throws(LicenseClientError) {
        heartbeat.withLock { $0?.cancel() }
        _ = try await client.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease.leaseId, licenseKey: key))
    }
}
