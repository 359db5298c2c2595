import Crypto

/// The secret that keys license-key hashes. Shared by issuance and validation only.
public struct KeyHashSecret: Sendable {
    private let box: KeyBox

    public init(bytes: [UInt8]) throws(KeyHashSecretError) {
        guard bytes.count >= 32 else { throw .tooShort(bytes.count) }
        self.box = KeyBox(SymmetricKey(data: bytes))
    }

    /// The keyed hash of `bytes` (HMAC-SHA256 under this secret).
    func authenticationCode(for bytes: [UInt8]) -> HashedAuthenticationCode<SHA256> {
        // A copy of the keyed state: the key's padding blocks are hashed once, not per call.
        var mac = box.keyed
        mac.update(data: bytes)
        return mac.finalize()
    }

    /// Holds the key made once, not on every validation, and the HMAC state keyed with it.
    private final class KeyBox: @unchecked Sendable {
        // @unchecked: SymmetricKey and the HMAC state are values that swift-crypto 3 does
        // not mark Sendable; they are never mutated after init (callers mutate copies).
        let keyed: HMAC<SHA256>
        init(_ key: SymmetricKey) { self.keyed = HMAC<SHA256>(key: key) }
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
        let mac = authenticationCode(for: Array("named-user\u{0}\(license)\u{0}\(user)".utf8))
        return Hex.encode(Array(mac).prefix(16))
    }
}
