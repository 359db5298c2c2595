import NIOConcurrencyHelpers

/// Token buckets by key: `rate` tokens a second, up to `burst`. The buckets are spread
/// over shards, each with its own lock, so event loops taking tokens for different keys
/// rarely wait for each other.
final class TokenBuckets: Sendable {
    let rate: Double
    let burst: Double
    private static let shardCount = 16
    private let shards: [NIOLockedValueBox<[String: (tokens: Double, at: ContinuousClock.Instant)]>]

    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        self.shards = (0..<Self.shardCount).map { _ in NIOLockedValueBox([:]) }
    }

    private func shard(_ key: String) -> NIOLockedValueBox<[String: (tokens: Double, at: ContinuousClock.Instant)]> {
        shards[Int(UInt(bitPattern: key.hashValue) % UInt(Self.shardCount))]
    }

    /// Takes a token; when none is left, returns the seconds until one will be.
    func take(_ key: String, cost: Double = 1) -> Double? {
        let now = ContinuousClock.now
        return shard(key).withLockedValue { buckets in
            var bucket = buckets[key] ?? (burst, now)
            let elapsed = now - bucket.at
            bucket.tokens = min(burst, bucket.tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate)
            bucket.at = now
            defer {
                buckets[key] = bucket
                // A bucket untouched for burst/rate seconds is full again and carries no
                // information: sweep those now and then, so memory follows the active keys.
                if buckets.count > 10_000 / Self.shardCount, buckets.count % 64 == 0 {
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
        return shard(key).withLockedValue { buckets in
            guard let bucket = buckets[key] else { return false }
            let elapsed = now - bucket.at
            return bucket.tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate < 1
        }
    }
}
