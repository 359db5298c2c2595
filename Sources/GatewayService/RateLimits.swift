import NIOConcurrencyHelpers

/// Token buckets by key: `rate` tokens a second, up to `burst`. The buckets are spread
/// over shards, each with its own lock, so event loops taking tokens for different keys
/// rarely wait for each other.
final class TokenBuckets<Key: Hashable & Sendable>: Sendable {
    let rate: Double
    let burst: Double
    private static var shardCount: Int { 16 }
    private let shards: [NIOLockedValueBox<Shard>]

    private struct Shard {
        var buckets: [Key: (tokens: Double, at: ContinuousClock.Instant)] = [:]
        var swept = ContinuousClock.now
    }

    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        self.shards = (0..<Self.shardCount).map { _ in NIOLockedValueBox(Shard()) }
    }

    private func shard(_ key: Key) -> NIOLockedValueBox<Shard> {
        shards[Int(UInt(bitPattern: key.hashValue) % UInt(Self.shardCount))]
    }

    /// A bucket untouched for burst/rate seconds is full again and carries no information.
    private var idle: Duration { rate > 0 ? .seconds(burst / rate) : .seconds(3600) }

    /// Takes a token; when none is left, returns the seconds until one will be.
    func take(_ key: Key, cost: Double = 1) -> Double? {
        let now = ContinuousClock.now
        let idle = self.idle
        return shard(key).withLockedValue { shard in
            var bucket = shard.buckets[key] ?? (burst, now)
            let elapsed = now - bucket.at
            bucket.tokens = min(burst, bucket.tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate)
            bucket.at = now
            defer {
                shard.buckets[key] = bucket
                // Full buckets are dropped once per idle period, so memory follows the
                // active keys and the sweep costs nothing per call.
                if now - shard.swept >= idle {
                    shard.buckets = shard.buckets.filter { now - $0.value.at < idle }
                    shard.swept = now
                }
            }
            guard bucket.tokens >= cost else { return (cost - bucket.tokens) / rate }
            bucket.tokens -= cost
            return nil
        }
    }

    /// Buckets held (for tests and memory accounting).
    var count: Int { shards.reduce(0) { $0 + $1.withLockedValue { $0.buckets.count } } }

    /// Whether the bucket has a token, without taking one.
    func isEmpty(_ key: Key) -> Bool {
        let now = ContinuousClock.now
        return shard(key).withLockedValue { shard in
            guard let bucket = shard.buckets[key] else { return false }
            let elapsed = now - bucket.at
            return bucket.tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate < 1
        }
    }
}

/// A license key as the per-key limits count it: the same key however it was typed.
enum LicenseKeyIdentity: Hashable, Sendable {
    case key(UInt128)
    /// Text that is not a well-formed key (validation will say so): limited by itself.
    case text(String)
}
