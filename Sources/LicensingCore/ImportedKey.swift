import Crypto

/// A license key brought over from another licensing system, kept working as its holders
/// know it. Dashes and spaces are dropped and letters upper-cased; what remains must be 12
/// to 64 letters and digits, and must not look like this system's own format (28 symbols
/// starting with its version symbol: those get this system's check-symbol errors). Stored
/// like a native key: only its keyed hash (under a label of its own, so the two kinds
/// never collide) and its first five symbols.
public struct ImportedKey: Hashable, Sendable {
    public let normalized: String

    public init(parsing text: String) throws(ImportedKeyError) {
        guard text.utf8.count <= 200 else { throw .wrongLength(text.utf8.count) }
        var normalized = ""
        for scalar in text.unicodeScalars where scalar != "-" && scalar != " " {
            guard scalar.isASCII, let byte = UInt8(exactly: scalar.value), (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            else { throw .invalidSymbol(Character(scalar)) }
            normalized.unicodeScalars.append(Unicode.Scalar(byte >= 0x61 ? byte - 0x20 : byte))
        }
        guard (12...64).contains(normalized.count) else { throw .wrongLength(normalized.count) }
        guard !(normalized.count == LicenseKey.length && normalized.first == LicenseKey.version) else { throw .nativeFormat }
        self.normalized = normalized
    }

    public var prefix: String { String(normalized.prefix(LicenseKey.prefixLength)) }

    public func hash(secret: KeyHashSecret) -> String {
        Hex.encode(secret.authenticationCode(for: Array("imported\u{0}\(normalized)".utf8)))
    }
}

public enum ImportedKeyError: Error, Equatable, CustomStringConvertible {
    case invalidSymbol(Character)
    case wrongLength(Int)
    case nativeFormat

    public var description: String {
        switch self {
        case .invalidSymbol(let c): return "'\(c)' is not a letter or digit; an imported key may hold only letters, digits, dashes and spaces"
        case .wrongLength(let n): return "an imported key has 12 to 64 letters and digits, this one has \(n)"
        case .nativeFormat: return "this is in this system's own key format (28 symbols starting with 1): it cannot be imported as another system's key"
        }
    }
}

/// What a look-up needs from a key as typed: its stored hash, and the native key when it is one.
public struct KeyReference: Sendable {
    public let hash: String
    public let native: LicenseKey?
    public var imported: Bool { native == nil }

    /// A native key, else an imported one; a text that is neither gets the native error.
    public init(parsing text: String, secret: KeyHashSecret) throws(LicenseKeyError) {
        do {
            let key = try LicenseKey(parsing: text)
            hash = key.hash(secret: secret)
            native = key
        } catch {
            guard let imported = try? ImportedKey(parsing: text) else { throw error }
            hash = imported.hash(secret: secret)
            native = nil
        }
    }
}
