import NIOConcurrencyHelpers

/// Token buckets by key: `rate` tokens a second, up to `burst`.
final class TokenBuckets: Sendable {
    let rate: Double
    let burst: Double
    private let buckets = NIOLockedValueBox<[String: (tokens: Double, at: ContinuousClock.Instant)]>([:])

    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
    }

    /// Takes a token; when none is left, returns the seconds until one will be.
    func take(_ key: String, cost: Double = 1) -> Double? {
        let now = ContinuousClock.now
        return buckets.withLockedValue { buckets in
            var bucket = buckets[key] ?? (burst, now)
            let elapsed = now - bucket.at
            bucket.tokens = min(burst, bucket.tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate)
            bucket.at = now
            defer {
                buckets[key] = bucket
                // A bucket untouched for burst/rate seconds is full again and carries no
                // information: sweep those now and then, so memory follows the active keys.
                if buckets.count > 10_000, buckets.count % 1024 == 0 {
                    let idle = Duration.seconds(burst / rate)
                    buckets = buckets.filter { now - $0.value.at < idle }
                }
            }
            guard bucket.tokens >= cost else { return (cost - bucket.tokens) / rate }
            bucket.tokens -= cost
            return nil
        }
    }

    /// Whether the bucket has a token, without taking one.
    func isEmpty(_ key: String) -> Bool {
        let now = ContinuousClock.now
        return buckets.withLockedValue { buckets in
            guard let bucket = buckets[key] else { return false }
            let elapsed = now - bucket.at
            return bucket.tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate < 1
        }
    }
}
