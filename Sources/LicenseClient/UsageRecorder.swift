import Synchronization
import Foundation
import LicensingWire

/// Usage events buffered in memory and sent in batches. Each event gets an id when it is
/// recorded, so a batch sent again after a lost answer is counted once.
public final class UsageRecorder: Sendable {
    private let client: LicenseClient
    private let key: String
    private let maxBatch: Int
    private let pending = Mutex<[UsageEvent]>([])

    init(client: LicenseClient, key: String, maxBatch: Int) {
        self.client = client
        self.key = key
        self.maxBatch = min(max(maxBatch, 1), 1000)
    }

    /// Buffers one event; returns true when a batch is full and `flush()` should be called.
    @discardableResult
    public func record(feature: String, quantity: UInt64 = 1, user: String = "", fingerprint: String = "") -> Bool {
        let event = UsageEvent(
            eventId: UUID().uuidString, licenseKey: key, feature: feature, quantity: quantity, occurredAt: client.clock.now, user: user, fingerprint: fingerprint)
        return pending.withLock { pending in
            pending.append(event)
            return pending.count >= maxBatch
        }
    }

    public var buffered: Int { pending.withLock { $0.count } }

    /// Sends what is buffered, in batches; what fails to send stays buffered for the next
    /// flush (the ids make a resend safe). Returns what the server accepted.
    @discardableResult
    public func flush() async throws(LicenseClientError) -> RecordUsageResponse {
        var total = RecordUsageResponse()
        while true {
            let batch = pending.withLock { Array($0.prefix(maxBatch)) }
            guard !batch.isEmpty else { return total }
            let answer = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: batch))
            pending.withLock { $0.removeFirst(min(batch.count, $0.count)) }
            total.accepted += answer.accepted
            total.duplicates += answer.duplicates
            total.rejected += answer.rejected
        }
    }
}
