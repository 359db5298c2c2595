import Crypto
import Foundation
import LicensingWire

/// License files for machines that cannot reach the server: a signed, machine-bound
/// certificate, in clear or encrypted so that only the holder of the license key can read it.
///
/// Encrypted layout (armoured as `ENCRYPTED LICENSE FILE`): version byte 1, 16-byte salt,
/// then AES-256-GCM (nonce ‖ ciphertext ‖ tag) of the armoured certificate, under
/// HKDF-SHA256(license key, salt, "license-manager offline file v1").
public enum OfflineLicenseFile {
    public static let encryptedLabel = "ENCRYPTED LICENSE FILE"
    static let info = Array("license-manager offline file v1".utf8)

    public static func encrypt(_ armoredCertificate: String, licenseKey: LicenseKey) -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for index in salt.indices { salt[index] = generator.next() }
        let key = derive(licenseKey, salt: salt)
        let sealed = try! AES.GCM.seal(Array(armoredCertificate.utf8), using: key)
        return Armor.encode(encryptedLabel, [1] + salt + Array(sealed.combined!))
    }

    /// The armoured certificate inside a file; encrypted files need the license key.
    public static func certificate(in file: String, licenseKey: LicenseKey?) throws(OfflineFileError) -> String {
        guard let bytes = Armor.decode(encryptedLabel, file) else {
            guard Armor.decode(LicenseCertificates.label, file) != nil else { throw .notALicenseFile }
            return file
        }
        guard let licenseKey else { throw .keyRequired }
        guard bytes.count > 17 + 28, bytes[0] == 1 else { throw .notALicenseFile }
        let salt = Array(bytes[1..<17])
        do {
            let box = try AES.GCM.SealedBox(combined: bytes[17...])
            let plain = try AES.GCM.open(box, using: derive(licenseKey, salt: salt))
            return String(decoding: plain, as: UTF8.self)
        } catch {
            throw .wrongKeyOrAltered
        }
    }

    /// Verifies a license file offline: signature with the published public keys, validity
    /// window, machine binding, and clock rollback against the last time the product saw.
    /// Returns what the certificate asserts and the `lastSeen` to store for next time.
    public static func verify(
        _ file: String, licenseKey: LicenseKey?, publicKeys: [String: [UInt8]], fingerprint: String,
        now: Int64, lastSeen: Int64, tolerance: Int64 = 300
    ) throws(OfflineFileError) -> (payload: CertificatePayload, lastSeen: Int64) {
        // A clock set back to before a time already seen means someone is stretching the license.
        if lastSeen > now.saturatingAdd(tolerance) { throw .clockRolledBack(now: now, lastSeen: lastSeen) }
        let armored = try certificate(in: file, licenseKey: licenseKey)
        do {
            let payload = try LicenseCertificates.verify(armored, publicKeys: publicKeys, now: now, fingerprint: fingerprint)
            guard !payload.fingerprintSha256.isEmpty else { throw OfflineFileError.notMachineBound }
            return (payload, max(lastSeen, now))
        } catch let error as CertificateError {
            if case .notYetValid(let from) = error, from > now.saturatingAdd(tolerance) { throw .clockRolledBack(now: now, lastSeen: from) }
            throw .certificate(error)
        } catch let error as OfflineFileError {
            throw error
        } catch {
            throw .notALicenseFile
        }
    }

    private static func derive(_ licenseKey: LicenseKey, salt: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: Array(licenseKey.canonical.utf8)), salt: salt, info: info, outputByteCount: 32)
    }
}

public enum OfflineFileError: Error, Equatable, CustomStringConvertible {
    case notALicenseFile
    case keyRequired
    case wrongKeyOrAltered
    case notMachineBound
    case clockRolledBack(now: Int64, lastSeen: Int64)
    case certificate(CertificateError)

    public var description: String {
        switch self {
        case .notALicenseFile: return "this is not a license file"
        case .keyRequired: return "the license file is encrypted: give the license key"
        case .wrongKeyOrAltered: return "the license file does not open with this license key (wrong key, or the file was altered)"
        case .notMachineBound: return "the license file is not bound to a machine"
        case .clockRolledBack(let now, let seen): return "the clock reads \(now) but \(seen) was already seen: it has been set back"
        case .certificate(let error): return error.description
        }
    }
}

/// Checks a signed validation answer: the signature over the statement, the nonce the
/// client sent (an answer replayed to another request fails), and the server time.
public enum ValidationAnswer {
    public static func verify(
        _ response: ValidateResponse, nonce: [UInt8], publicKeys: [String: [UInt8]], now: Int64, maxSkew: Int64 = 300
    ) throws(ValidationAnswerError) -> ValidationStatement {
        guard !response.statement.isEmpty, !response.signature.isEmpty else { throw .unsigned }
        guard let publicKey = publicKeys[response.kid].flatMap({ try? Curve25519.Signing.PublicKey(rawRepresentation: $0) }) else {
            throw .unknownKey(response.kid)
        }
        guard publicKey.isValidSignature(response.signature, for: response.statement) else { throw .badSignature }
        guard let statement = try? ValidationStatement(serializedBytes: response.statement) else { throw .badSignature }
        guard statement.nonce == nonce else { throw .nonceMismatch }
        guard statement.serverTime.saturatingSubtract(now).magnitude <= maxSkew.magnitude else { throw .stale(statement.serverTime) }
        guard statement.reason == response.reason, statement.licenseId == response.licenseId else { throw .fieldsAltered }
        return statement
    }
}

public enum ValidationAnswerError: Error, Equatable, CustomStringConvertible {
    case unsigned
    case unknownKey(String)
    case badSignature
    case nonceMismatch
    case stale(Int64)
    case fieldsAltered

    public var description: String {
        switch self {
        case .unsigned: return "the answer is not signed (send a nonce to get a signed answer)"
        case .unknownKey(let kid): return "the answer was signed by key \(kid), which is not in the public key set"
        case .badSignature: return "the answer's signature does not verify: forged or altered"
        case .nonceMismatch: return "the answer is for another request (nonce differs): a replay"
        case .stale(let t): return "the answer was made at \(t), too far from now"
        case .fieldsAltered: return "the answer's fields differ from its signed statement"
        }
    }
}
