import Foundation
import Synchronization

/// Wall-clock time in Unix seconds, injected so expiry, grace and leases are tested
/// without sleeping.
public protocol LicenseClock: Sendable {
    var now: Int64 { get }
}

public struct SystemLicenseClock: LicenseClock {
    public init() {}
    public var now: Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec)
    }
}

/// A clock tests move by hand.
public final class ManualLicenseClock: LicenseClock {
    private let seconds: Atomic<Int64>
    public init(_ start: Int64 = 1_800_000_000) { seconds = Atomic(start) }
    public var now: Int64 { seconds.load(ordering: .relaxed) }
    public func advance(by delta: Int64) { seconds.add(delta, ordering: .relaxed) }
    public func set(_ value: Int64) { seconds.store(value, ordering: .relaxed) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Int64 {
    /// `self + other`, held at the type's ends instead of trapping: times and durations a
    /// database kept from before bounds were enforced must not take a process down.
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    /// `self - other`, held at the type's ends instead of trapping.
    public func saturatingSubtract(_ other: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : difference
    }
}

/// Times as people read them in messages: ISO 8601 in UTC.
public enum ISODate {
    public static func format(_ seconds: Int64) -> String {
        guard seconds != 0 else { return "never" }
        return ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }

    /// The UTC calendar day holding the time, e.g. 2026-12-01.
    public static func day(_ seconds: Int64) -> String {
        String(format(seconds == 0 ? 1 : seconds).prefix(10))
    }
}
