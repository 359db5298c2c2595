import Crypto

/// The secret that keys license-key hashes. Shared by issuance and validation only.
public struct KeyHashSecret: Sendable {
    private let box: KeyBox

    public init(bytes: [UInt8]) throws(KeyHashSecretError) {
        guard bytes.count >= 32 else { throw .tooShort(bytes.count) }
        self.box = KeyBox(SymmetricKey(data: bytes))
    }

    var key: SymmetricKey { box.key }

    /// Holds the key made once, not on every validation.
    private final class KeyBox: @unchecked Sendable {
        // @unchecked: SymmetricKey is an immutable value that swift-crypto 3 does not mark
        // Sendable; it is never mutated after init.
        let key: SymmetricKey
        init(_ key: SymmetricKey) { self.key = key }
    }

    /// 32 fresh random bytes, for a new deployment.
    public static func generateBytes() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }
}

public enum KeyHashSecretError: Error, CustomStringConvertible {
    case tooShort(Int)
    public var description: String {
        switch self {
        case .tooShort(let n): return "the key-hash secret must be at least 32 bytes, got \(n)"
        }
    }
}

extension KeyHashSecret {
    /// What the change feed carries for a named user of a license: a keyed hash, so the
    /// services that check named users (validation) compare without holding the name.
    public func namedUserPseudonym(license: String, user: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("named-user\u{0}\(license)\u{0}\(user)".utf8), using: key)
        return Hex.encode(Array(mac).prefix(16))
    }
}
