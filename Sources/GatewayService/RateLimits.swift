import Synchronization
import Crypto

/// Token buckets by key: `rate` tokens a second, up to `burst`. The buckets are spread
/// over shards, each with its own lock, so event loops taking tokens for different keys
/// rarely wait for each other. A bucket is 8 bytes (tokens, and the millisecond it was
/// last touched): the per-license-key limits hold one for every key seen in the last few
/// seconds, which with 100,000 licenses is tens of thousands.
final class TokenBuckets<Key: Hashable & Sendable>: Sendable {
    let rate: Double
    let burst: Double
    private static var shardCount: Int { 16 }
    private let shards: [ShardLock]
    /// Milliseconds on a monotonic clock, wrapping after 49 days; tests pass their own.
    private let milliseconds: @Sendable () -> UInt32

    private struct Bucket {
        var tokens: Float
        /// `milliseconds()` when last touched; a bucket is swept long before the clock wraps.
        var at: UInt32
    }

    private final class ShardLock: Sendable {
        let state = Mutex(Shard())
    }

    private struct Shard {
        var buckets: [Key: Bucket] = [:]
        var swept: UInt32 = 0
    }

    /// A bucket untouched for burst/rate seconds is full again and carries no information.
    private let idleMilliseconds: UInt32

    init(rate: Double, burst: Double, milliseconds: (@Sendable () -> UInt32)? = nil) {
        self.rate = rate
        self.burst = burst
        self.milliseconds = milliseconds ?? Self.monotonicMilliseconds()
        self.idleMilliseconds = rate > 0 ? UInt32(min(burst / rate * 1000, 3_600_000)) : 3_600_000
        self.shards = (0..<Self.shardCount).map { _ in ShardLock() }
    }

    private func shard(_ key: Key) -> ShardLock {
        shards[Int(UInt(bitPattern: key.hashValue) % UInt(Self.shardCount))]
    }

    private var now: UInt32 { milliseconds() }

    /// Milliseconds since the buckets were made, by `ContinuousClock`.
    static func monotonicMilliseconds() -> @Sendable () -> UInt32 {
        let epoch = ContinuousClock.now
        return {
            let (seconds, attoseconds) = (ContinuousClock.now - epoch).components
            return UInt32(truncatingIfNeeded: seconds &* 1000 &+ attoseconds / 1_000_000_000_000_000)
        }
    }

    private func refilled(_ bucket: Bucket, at now: UInt32) -> Double {
        min(burst, Double(bucket.tokens) + Double(now &- bucket.at) / 1000 * rate)
    }

    /// Takes a token; when none is left, returns the seconds until one will be.
    func take(_ key: Key, cost: Double = 1) -> Double? {
        let now = self.now
        let idle = idleMilliseconds
        return shard(key).state.withLock { shard in
            // Full buckets are dropped once per idle period (before this look-up, so no
            // bucket is older than that when read), and memory follows the active keys.
            if now &- shard.swept >= idle {
                shard.buckets = shard.buckets.filter { now &- $0.value.at < idle }
                shard.swept = now
            }
            var tokens = shard.buckets[key].map { refilled($0, at: now) } ?? burst
            defer { shard.buckets[key] = Bucket(tokens: Float(tokens), at: now) }
            guard tokens >= cost else { return (cost - tokens) / rate }
            tokens -= cost
            return nil
        }
    }

    /// Buckets held (for tests and memory accounting).
    var count: Int { shards.reduce(0) { $0 + $1.state.withLock { $0.buckets.count } } }

    /// Whether the bucket has a token, without taking one.
    func isEmpty(_ key: Key) -> Bool {
        let now = self.now
        return shard(key).state.withLock { shard in
            guard let bucket = shard.buckets[key] else { return false }
            return refilled(bucket, at: now) < 1
        }
    }
}

/// A license key as the per-key limits count it: the same key however it was typed. Text
/// that is not a well-formed key (validation will say so) counts by a digest of itself.
struct LicenseKeyIdentity: Hashable, Sendable {
    let bits: UInt128

    init(key: UInt128) {
        bits = key
    }

    init(text: String) {
        let digest = Array(SHA256.hash(data: Array(text.utf8)).prefix(16))
        bits = digest.reduce(UInt128(0)) { $0 << 8 | UInt128($1) }
    }
}
