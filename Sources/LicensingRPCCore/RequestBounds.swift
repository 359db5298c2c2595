import LicensingWire

/// The ranges every integer of every request must keep, by what the field's name says it is.
/// Applied once, where requests are decoded, so a handler never sees a value that its
/// arithmetic (or SQLite's 64-bit integers) cannot hold, and a new field named like its
/// kind (`…_seconds`, `…_at`, `max_…`) is bounded without anyone remembering.
public enum RequestBounds {
    /// 100 years: longer than any licence, grace period or interval a vendor sells.
    public static let maximumDurationSeconds: Int64 = 3_155_760_000
    /// 9999-12-31T23:59:59Z; 0 means "not set" in every contract.
    public static let maximumTimestamp: Int64 = 253_402_300_799
    /// Machines, users, seats, limits: a million of anything per licence.
    public static let maximumCount: UInt64 = 1_000_000
    /// Usage quantities, quotas and money in minor units.
    public static let maximumQuantity: UInt64 = 1_000_000_000_000_000

    enum Kind {
        case duration, timestamp, count, permille, quantity, money, sequence, unbounded

        var range: ClosedRange<Int64> {
            switch self {
            case .duration: return 0...maximumDurationSeconds
            case .timestamp: return 0...maximumTimestamp
            case .count: return 0...Int64(maximumCount)
            case .permille: return 0...100_000
            case .quantity, .money: return 0...Int64(maximumQuantity)
            case .sequence: return 0...Int64.max
            case .unbounded: return Int64.min...Int64.max
            }
        }

        var unit: String {
            switch self {
            case .duration: return " seconds (100 years)"
            case .timestamp: return " (Unix seconds, up to 9999-12-31)"
            case .permille: return " per mille"
            default: return ""
            }
        }
    }

    private static let timestamps: Set<String> = [
        "from", "to", "period_start", "period_end", "extend_to", "expiring_before", "not_before", "not_after", "server_time",
    ]
    private static let counts: Set<String> = ["limit", "page_size", "count", "seat_limit", "version"]

    static func kind(of name: String) -> Kind {
        if name.hasSuffix("_seconds") { return .duration }
        if name.hasSuffix("_at") || timestamps.contains(name) { return .timestamp }
        if name.hasPrefix("max_") || counts.contains(name) { return .count }
        if name.hasSuffix("_permille") { return .permille }
        if name.hasSuffix("_minor") { return .money }
        if name == "quantity" || name == "quota" || name.hasSuffix("_quantity") { return .quantity }
        if name.hasSuffix("_seq") || name == "seq" { return .sequence }
        return .unbounded
    }

    /// What is wrong with `value` for the field `name`, or nil.
    public static func check(_ name: String, _ value: WireInteger) -> String? {
        let kind = kind(of: name)
        let range = kind.range
        switch value {
        case .signed(let number):
            if range.contains(number) { return nil }
        case .unsigned(let number):
            if number <= UInt64(Int64.max), range.contains(Int64(number)) { return nil }
        }
        if kind == .unbounded {
            // Enums and other signed values take any value; unsigned ones must fit SQLite's 64 bits.
            return "must be at most \(Int64.max); got \(value)"
        }
        return "must be between \(range.lowerBound) and \(range.upperBound)\(kind.unit); got \(value)"
    }
}
