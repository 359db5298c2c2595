import Synchronization
import LicensingCore

/// Limits activations per license: a token bucket of `perHour` tokens refilled evenly,
/// so a leaked key cannot be activated on machine after machine in a burst.
final class ActivationLimiter: Sendable {
    private let perHour: Int
    private let clock: any LicenseClock
    /// Keyed by a 64-bit hash of the license id, with small values: after a burst of
    /// activations across many licenses this stays a few MiB, not tens.
    private let buckets = Mutex<[Int: (tokens: Float, at: Int32)]>([:])
    private let epoch: Int64

    init(perHour: Int, clock: any LicenseClock) {
        self.perHour = perHour
        self.clock = clock
        self.epoch = clock.now
    }

    func allow(_ license: String) -> Bool {
        guard perHour > 0 else { return true }
        let now = Int32(clamping: clock.now - epoch)
        let full = Float(perHour)
        return buckets.withLock { buckets in
            let key = license.hashValue
            var bucket = buckets[key] ?? (full, now)
            // A wall clock set back refills nothing (it must not drain the bucket for hours).
            bucket.tokens = min(full, bucket.tokens + Float(max(0, now - bucket.at)) * full / 3600)
            bucket.at = now
            defer {
                // Buckets untouched for an hour are full again: sweep them now and then.
                if buckets.count > 10_000, buckets.count % 1024 == 0 {
                    buckets = buckets.filter { now - $0.value.at < 3600 }
                }
            }
            guard bucket.tokens >= 1 else {
                buckets[key] = bucket
                return false
            }
            bucket.tokens -= 1
            buckets[key] = bucket
            return true
        }
    }
}
