import Crypto

/// A license key as a person types it at install: Crockford base32 in groups of four,
/// e.g. `1ABC-DEFG-HJKM-NPQR-STVW-XYZ0-123K`.
///
/// Layout: one format-version symbol, 26 symbols carrying 128 random bits (the top two bits
/// of the first are zero), one Luhn mod 32 check symbol over the 27 before it. The check
/// symbol catches every single mistyped symbol and most swapped neighbours before any
/// look-up is made.
public struct LicenseKey: Hashable, Sendable, CustomStringConvertible {
    /// The 28 symbols without separators.
    public let canonical: String

    static let version: Character = "1"
    static let dataSymbols = 26
    static let length = 28
    /// Leading symbols stored in clear so support can find a license by what a customer reads out.
    public static let prefixLength = 5

    /// A new key from 128 bits of the system CSPRNG.
    public static func generate() -> LicenseKey {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        var symbols = [UInt8](repeating: 0, count: dataSymbols)
        // 26 symbols x 5 bits = 130 bits; the 128 random bits fill the low end.
        var hi = high, lo = low
        for index in stride(from: dataSymbols - 1, through: 0, by: -1) {
            symbols[index] = UInt8(lo & 0x1F)
            lo = (lo >> 5) | ((hi & 0x1F) << 59)
            hi >>= 5
        }
        var values = [Crockford.value(of: version)!] + symbols
        values.append(Crockford.luhnCheck(values))
        return LicenseKey(uncheckedCanonical: String(values.map { Crockford.alphabet[Int($0)] }))
    }

    private init(uncheckedCanonical: String) {
        self.canonical = uncheckedCanonical
    }

    /// Parses what a person typed: case, hyphens and spaces do not matter; `I`/`L` read as
    /// `1` and `O` as `0`, as Crockford's alphabet prescribes.
    public init(parsing text: String) throws(LicenseKeyError) {
        // Works on UTF-8 bytes with a lookup table: this runs on every validation.
        var values: [UInt8] = []
        values.reserveCapacity(Self.length)
        var symbols = 0
        for byte in text.utf8 where byte != UInt8(ascii: "-") && byte != UInt8(ascii: " ") {
            symbols += 1
            guard symbols <= Self.length else { continue }
            guard let value = Crockford.value(ofASCII: byte) else {
                throw .invalidSymbol(Self.symbol(at: symbols, in: text))
            }
            values.append(value)
        }
        guard symbols == Self.length else { throw .wrongLength(symbols) }
        guard values[0] == Crockford.value(of: Self.version)! else { throw .unknownVersion }
        // 26 symbols hold 130 bits; a key carries 128, so the first data symbol is below 8.
        guard values[1] < 8 else { throw .checkFailed }
        guard Crockford.luhnCheck(values.dropLast()) == values.last! else { throw .checkFailed }
        self.canonical = String(decoding: values.map { Crockford.asciiAlphabet[Int($0)] }, as: UTF8.self)
    }

    /// The 128 random bits: a compact identity for the key, e.g. for per-key rate limits
    /// (16 bytes where the canonical text takes a heap allocation).
    public var bits: UInt128 {
        var bits: UInt128 = 0
        for byte in canonical.utf8.dropFirst().prefix(Self.dataSymbols) {
            bits = bits << 5 | UInt128(Crockford.value(ofASCII: byte)!)
        }
        return bits
    }

    /// The `n`th symbol (ignoring separators), for the error message.
    private static func symbol(at n: Int, in text: String) -> Character {
        var count = 0
        for character in text where character != "-" && character != " " {
            count += 1
            if count == n { return character }
        }
        return "?"
    }

    /// Groups of four, as shown to people.
    public var description: String {
        var out = ""
        for (index, character) in canonical.enumerated() {
            if index > 0, index % 4 == 0 { out.append("-") }
            out.append(character)
        }
        return out
    }

    /// The non-secret prefix stored in clear.
    public var prefix: String { String(canonical.prefix(Self.prefixLength)) }

    /// HMAC-SHA256 of the canonical key under the server's key-hash secret, as lower-case hex.
    /// Only this is stored: a stolen database yields no keys, and the secret is needed to
    /// test guesses against it.
    public func hash(secret: KeyHashSecret) -> String {
        let mac = secret.authenticationCode(for: Array(canonical.utf8))
        return Hex.encode(mac)
    }
}

public enum LicenseKeyError: Error, Equatable, CustomStringConvertible {
    case invalidSymbol(Character)
    case wrongLength(Int)
    case unknownVersion
    case checkFailed

    public var description: String {
        switch self {
        case .invalidSymbol(let c): return "'\(c)' is not a license key symbol"
        case .wrongLength(let n): return "a license key has 28 symbols, this one has \(n)"
        case .unknownVersion: return "the key's format version is not known"
        case .checkFailed: return "the key's check symbol does not match: a symbol is mistyped"
        }
    }
}

enum Crockford {
    static let alphabet: [Character] = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    static let asciiAlphabet: [UInt8] = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// ASCII byte → symbol value (255 = not a symbol); O reads as 0, I and L as 1, any case.
    private static let table: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 128)
        for (value, byte) in asciiAlphabet.enumerated() {
            table[Int(byte)] = UInt8(value)
            table[Int(byte | 0x20)] = UInt8(value)
        }
        for byte in Array("oO".utf8) { table[Int(byte)] = 0 }
        for byte in Array("iIlL".utf8) { table[Int(byte)] = 1 }
        return table
    }()

    static func value(ofASCII byte: UInt8) -> UInt8? {
        guard byte < 128 else { return nil }
        let value = table[Int(byte)]
        return value == 255 ? nil : value
    }

    static func value(of character: Character) -> UInt8? {
        guard let ascii = character.asciiValue else { return nil }
        return value(ofASCII: ascii)
    }

    /// Luhn mod N (N = 32): the symbol that makes the weighted sum divisible by 32.
    static func luhnCheck<C: Collection>(_ values: C) -> UInt8 where C.Element == UInt8 {
        var factor = 2
        var sum = 0
        for value in values.reversed() {
            var addend = factor * Int(value)
            factor = factor == 2 ? 1 : 2
            addend = addend / 32 + addend % 32
            sum += addend
        }
        return UInt8((32 - sum % 32) % 32)
    }
}

public enum Hex {
    public static func encode<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func encode(_ mac: HashedAuthenticationCode<SHA256>) -> String {
        encode(Array(mac))
    }

    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let hi = nibble(chars[index]), let lo = nibble(chars[index + 1]) else { return nil }
            out.append(hi << 4 | lo)
            index += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
}
