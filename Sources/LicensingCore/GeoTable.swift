import Foundation

/// Maps IP addresses to ISO 3166-1 alpha-2 country codes, from a table file with one
/// `CIDR,COUNTRY` per line (`#` starts a comment):
///
///     81.2.69.0/24,GB
///     2001:db8::/32,DE
///
/// Ranges are kept sorted, and a look-up is a binary search.
public struct GeoTable: Sendable {
    private struct Range: Sendable {
        let low: UInt128
        let high: UInt128
        let country: String
    }

    private let ranges: [Range]

    public static let empty = GeoTable(ranges: [])

    private init(ranges: [Range]) {
        self.ranges = ranges.sorted { $0.low < $1.low }
    }

    public init(parsing text: String) throws(GeoTableError) {
        var ranges: [Range] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let trimmed = line.trimmingWhitespace()
            if trimmed.isEmpty { continue }
            let fields = trimmed.split(separator: ",").map { String($0).trimmingWhitespace() }
            guard fields.count == 2 else { throw .badLine(index + 1, "expected CIDR,COUNTRY") }
            let country = fields[1].uppercased()
            guard country.count == 2, country.utf8.allSatisfy({ (65...90).contains($0) }) else {
                throw .badLine(index + 1, "\"\(fields[1])\" is not an ISO 3166-1 alpha-2 code")
            }
            let parts = fields[0].split(separator: "/")
            guard parts.count == 2, let prefix = Int(parts[1]), let address = IPAddress(parsing: String(parts[0])) else {
                throw .badLine(index + 1, "\"\(fields[0])\" is not a CIDR range such as 81.2.69.0/24")
            }
            let bits = address.isV4 ? 32 : 128
            guard (0...bits).contains(prefix) else { throw .badLine(index + 1, "prefix /\(prefix) is out of range") }
            let hostBits = bits - prefix
            let mask: UInt128 = hostBits == 128 ? .max : (UInt128(1) << hostBits) - 1
            let low = address.value & ~mask
            ranges.append(Range(low: low, high: low | mask, country: country))
        }
        self.init(ranges: ranges)
    }

    /// The country of an address, or nil when the table does not cover it.
    public func country(of text: String) -> String? {
        guard let address = IPAddress(parsing: text) else { return nil }
        var lower = 0
        var upper = ranges.count
        while lower < upper {
            let middle = (lower + upper) / 2
            if ranges[middle].low <= address.value { lower = middle + 1 } else { upper = middle }
        }
        // The last range starting at or below the address; ranges may nest, so look back.
        var index = lower - 1
        while index >= 0 {
            if ranges[index].high >= address.value { return ranges[index].country }
            index -= 1
            if lower - index > 8 { break }
        }
        return nil
    }

    public var count: Int { ranges.count }
}

public enum GeoTableError: Error, Equatable, CustomStringConvertible {
    case badLine(Int, String)
    public var description: String {
        switch self {
        case .badLine(let line, let why): return "geo table line \(line): \(why)"
        }
    }
}

/// An IPv4 address (as IPv4-mapped IPv6) or an IPv6 address, as a 128-bit number.
struct IPAddress {
    let value: UInt128
    let isV4: Bool

    init?(parsing text: String) {
        if text.contains(":") {
            guard let value = Self.parseV6(text) else { return nil }
            self.value = value
            self.isV4 = false
        } else {
            let octets = text.split(separator: ".", omittingEmptySubsequences: false)
            guard octets.count == 4 else { return nil }
            var value: UInt128 = 0
            for octet in octets {
                guard let byte = UInt8(octet), octet.count <= 3 else { return nil }
                value = value << 8 | UInt128(byte)
            }
            self.value = value
            self.isV4 = true
        }
    }

    private static func parseV6(_ text: String) -> UInt128? {
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(group.count), let value = UInt16(group, radix: 16) else { return nil }
                out.append(value)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        let tail = halves.count == 2 ? groups(halves[1]) : []
        guard let tail else { return nil }
        let missing = 8 - head.count - tail.count
        guard halves.count == 2 ? missing >= 1 : missing == 0 else { return nil }
        let all = head + Array(repeating: 0, count: missing) + tail
        return all.reduce(UInt128(0)) { $0 << 16 | UInt128($1) }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
