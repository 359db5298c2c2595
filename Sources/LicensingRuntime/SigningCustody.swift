import ArgumentParser
import Foundation
import LicensingCore
import LicensingRPC

/// Where certificate signing keys live, chosen by the `signing-keys` setting:
/// `database` (the default) seals each private key under the master key in issuance's
/// database, and validation opens it from the feed; `pkcs11` generates each key inside a
/// PKCS#11 token (`pkcs11-module`, `pkcs11-token`, `pkcs11-pin` or `pkcs11-pin-file`), where
/// issuance and validation sign through it and never see the private key. Keys made before
/// a switch to the token keep working (they are still sealed) until they are retired.
public struct SigningCustody: Sendable {
    public let masterKey: MasterKey
    public let token: PKCS11Token?

    public init(masterKey: MasterKey, token: PKCS11Token? = nil) {
        self.masterKey = masterKey
        self.token = token
    }

    public static func from(settings: Settings, masterKey: MasterKey) throws -> SigningCustody {
        try from(settings: settings, masterKey: masterKey, token: try Secrets.pkcs11Token(settings))
    }

    /// `token`: the process's token (``Secrets/pkcs11Token(_:)``), shared with the master key.
    public static func from(settings: Settings, masterKey: MasterKey, token: PKCS11Token?) throws -> SigningCustody {
        switch settings.string("signing-keys", default: "database") {
        case "database":
            return SigningCustody(masterKey: masterKey)
        case "pkcs11":
            guard let token else {
                throw ValidationError("signing-keys = pkcs11 needs pkcs11-module: the path of the HSM vendor's PKCS#11 library")
            }
            return SigningCustody(masterKey: masterKey, token: token)
        case let other:
            throw ValidationError("signing-keys must be database or pkcs11, not \(other)")
        }
    }

    /// A new Ed25519 key: in the token when there is one (`sealed` is then empty), else
    /// generated here and sealed under the master key.
    public func newKey() throws -> (kid: String, publicKey: [UInt8], sealed: [UInt8]) {
        guard let token else {
            let key = CertificateSigningKey.generate()
            return (key.kid, key.publicKey, masterKey.seal(key.privateKey, context: key.kid))
        }
        // The kid comes from the public key, known only once the pair exists: generated
        // under a label of its own, then labelled by kid.
        let pending = "pending-" + UUID().uuidString
        do {
            let publicKey = try token.generate(label: pending)
            let kid = CertificateSigningKey.kid(for: publicKey)
            try token.relabel(pending, to: kid)
            return (kid, publicKey, [])
        } catch {
            throw Self.unavailable(error, kid: nil)
        }
    }

    /// The signer for a stored key: its token object, or its sealed private key opened.
    public func signer(kid: String, publicKey: [UInt8], sealed: [UInt8]) throws -> any CertificateSigner {
        guard sealed.isEmpty else {
            do {
                return try CertificateSigningKey(privateKey: try masterKey.open(sealed, context: kid))
            } catch {
                throw RPCError(.internal, "signing key \(kid) does not open with the configured master key: \(error)")
            }
        }
        guard let token else {
            throw RPCError(
                .failedPrecondition,
                "signing key \(kid) lives in a PKCS#11 token: set signing-keys = pkcs11 with pkcs11-module, pkcs11-token and the PIN")
        }
        return TokenSigner(kid: kid, publicKey: publicKey, token: token)
    }

    /// After a key is retired: a token key is destroyed (a sealed one stays in the rows,
    /// never used again).
    public func destroy(kid: String, sealed: [UInt8]) throws {
        guard sealed.isEmpty, let token else { return }
        do {
            try token.destroy(label: kid)
        } catch let error where error.keyNotFound {
            return
        }
    }

    static func unavailable(_ error: any Error, kid: String?) -> RPCError {
        RPCError(
            .unavailable,
            "signing is unavailable: \(error); unsigned validations go on — bring the token back (signing resumes by itself)"
                + (kid.map { " or, if key \($0) is lost with it, rotate the signing key" } ?? ""))
    }
}
