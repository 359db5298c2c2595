import LicensingCore
import NIOConcurrencyHelpers

/// Limits activations per license: a token bucket of `perHour` tokens refilled evenly,
/// so a leaked key cannot be activated on machine after machine in a burst.
final class ActivationLimiter: Sendable {
    private let perHour: Int
    private let clock: any LicenseClock
    private let buckets = NIOLockedValueBox<[String: (tokens: Double, at: Int64)]>([:])

    init(perHour: Int, clock: any LicenseClock) {
        self.perHour = perHour
        self.clock = clock
    }

    func allow(_ license: String) -> Bool {
        guard perHour > 0 else { return true }
        let now = clock.now
        return buckets.withLockedValue { buckets in
            var bucket = buckets[license] ?? (Double(perHour), now)
            bucket.tokens = min(Double(perHour), bucket.tokens + Double(now - bucket.at) * Double(perHour) / 3600)
            bucket.at = now
            guard bucket.tokens >= 1 else {
                buckets[license] = bucket
                return false
            }
            bucket.tokens -= 1
            buckets[license] = bucket
            if buckets.count > 100_000 { buckets = buckets.filter { $0.value.tokens < Double(perHour) } }
            return true
        }
    }
}
