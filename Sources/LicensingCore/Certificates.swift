import Crypto
import Foundation
import LicensingWire

/// An Ed25519 signing key with its id. The id is derived from the public key, so the
/// same key always has the same id.
/// Something that signs certificates and answers with an Ed25519 key named by `kid`: a key
/// opened in this process, or one that never leaves a hardware token.
public protocol CertificateSigner: Sendable {
    var kid: String { get }
    var publicKey: [UInt8] { get }
    func sign(_ message: [UInt8]) throws -> [UInt8]
}

public struct CertificateSigningKey: CertificateSigner {
    public let kid: String
    public let publicKey: [UInt8]
    // Raw 32-byte private key: Curve25519 key types are not Sendable in swift-crypto 3.
    private let privateKeyBytes: [UInt8]

    public static func generate() -> CertificateSigningKey {
        try! CertificateSigningKey(privateKey: Array(Curve25519.Signing.PrivateKey().rawRepresentation))
    }

    public init(privateKey: [UInt8]) throws {
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey)
        self.privateKeyBytes = privateKey
        self.publicKey = Array(key.publicKey.rawRepresentation)
        self.kid = Self.kid(for: publicKey)
    }

    public var privateKey: [UInt8] { privateKeyBytes }

    public static func kid(for publicKey: [UInt8]) -> String {
        "k_" + Hex.encode(SHA256.hash(data: publicKey).prefix(8))
    }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: privateKeyBytes)
        return Array(try! key.signature(for: message))
    }
}

/// Signed license certificates: Ed25519 over the encoded `CertificatePayload`, armoured as
/// text so a person can mail or paste it. Verifying needs only the public keys.
public enum LicenseCertificates {
    public static let label = "LICENSE CERTIFICATE"
    public static let currentVersion: UInt32 = 1

    public static func sign(_ payload: CertificatePayload, with key: some CertificateSigner) throws -> LicenseCertificate {
        let bytes = payload.serializedBytes()
        let signed = SignedCertificate(payload: bytes, kid: key.kid, signature: try key.sign(bytes))
        return LicenseCertificate(payload: payload, kid: key.kid, armored: Armor.encode(label, signed.serializedBytes()))
    }

    /// Checks an armoured certificate against the public key set (kid → raw public key)
    /// and returns what it asserts. `fingerprint`, when given, must be the one it is bound to.
    public static func verify(
        _ armored: String, publicKeys: [String: [UInt8]], now: Int64, fingerprint: String? = nil
    ) throws(CertificateError) -> CertificatePayload {
        guard let bytes = Armor.decode(label, armored) else { throw .malformed("not an armoured \(label)") }
        let signed: SignedCertificate
        let payload: CertificatePayload
        do {
            signed = try SignedCertificate(serializedBytes: bytes)
            payload = try CertificatePayload(serializedBytes: signed.payload)
        } catch {
            throw .malformed("the certificate does not decode")
        }
        guard let publicKeyBytes = publicKeys[signed.kid] else { throw .unknownKey(signed.kid) }
        guard let publicKey = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKeyBytes),
            publicKey.isValidSignature(signed.signature, for: signed.payload)
        else { throw .badSignature }
        guard payload.version == currentVersion else { throw .unsupportedVersion(payload.version) }
        guard now >= payload.notBefore else { throw .notYetValid(payload.notBefore) }
        guard now < payload.notAfter else { throw .expired(payload.notAfter) }
        if let fingerprint, !payload.fingerprintSha256.isEmpty, payload.fingerprintSha256 != fingerprintHash(fingerprint) {
            throw .fingerprintMismatch
        }
        return payload
    }

    public static func fingerprintHash(_ fingerprint: String) -> String {
        Hex.encode(SHA256.hash(data: Array(fingerprint.utf8)))
    }
}

public enum CertificateError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case unknownKey(String)
    case badSignature
    case unsupportedVersion(UInt32)
    case notYetValid(Int64)
    case expired(Int64)
    case fingerprintMismatch

    public var description: String {
        switch self {
        case .malformed(let why): return "malformed certificate: \(why)"
        case .unknownKey(let kid): return "the certificate was signed by key \(kid), which is not in the public key set"
        case .badSignature: return "the certificate's signature does not verify: it was altered or forged"
        case .unsupportedVersion(let v): return "certificate format version \(v) is not supported"
        case .notYetValid(let t): return "the certificate is valid only from \(t)"
        case .expired(let t): return "the certificate expired at \(t)"
        case .fingerprintMismatch: return "the certificate is bound to another machine"
        }
    }
}

/// BEGIN/END text armour around base64, 64 columns.
public enum Armor {
    public static func encode(_ label: String, _ bytes: [UInt8]) -> String {
        let base64 = Data(bytes).base64EncodedString()
        var lines = ["-----BEGIN \(label)-----"]
        var index = base64.startIndex
        while index < base64.endIndex {
            let end = base64.index(index, offsetBy: 64, limitedBy: base64.endIndex) ?? base64.endIndex
            lines.append(String(base64[index..<end]))
            index = end
        }
        lines.append("-----END \(label)-----")
        return lines.joined(separator: "\n") + "\n"
    }

    public static func decode(_ label: String, _ text: String) -> [UInt8]? {
        let begin = "-----BEGIN \(label)-----"
        let end = "-----END \(label)-----"
        guard let start = text.range(of: begin), let stop = text.range(of: end, range: start.upperBound..<text.endIndex) else {
            return nil
        }
        let body = text[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace }
        return Data(base64Encoded: String(body)).map(Array.init)
    }
}
