import CPKCS11
import LicensingCore
import Synchronization

/// Ed25519 keys that live in a PKCS#11 token (an HSM) and never leave it: generated inside as
/// non-extractable objects labelled by kid, used through `CKM_EDDSA`. The vendor's module is
/// loaded at run time, so any HSM with a PKCS#11 module works. The only place that hands C
/// pointers to the token.
///
/// The session is opened on first use, not at start (a token that is down must not stop the
/// service: unsigned work goes on), and opened again once when a call finds the token gone.
public final class PKCS11Token: Sendable {
    public struct Configuration: Sendable {
        public var module: String
        public var tokenLabel: String
        public var pin: String

        public init(module: String, tokenLabel: String, pin: String) {
            self.module = module
            self.tokenLabel = tokenLabel
            self.pin = pin
        }
    }

    public let configuration: Configuration
    private let session = Mutex<Handle?>(nil)

    /// The C handle; `lm_p11_*` calls on it are serialised by its own lock.
    private struct Handle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    public init(_ configuration: Configuration) {
        self.configuration = configuration
    }

    deinit {
        session.withLock { handle in
            if let handle { lm_p11_close(handle.pointer) }
            handle = nil
        }
    }

    /// Generates a key pair in the token under `label`; returns the raw public key.
    public func generate(label: String) throws(PKCS11Error) -> [UInt8] {
        try call("generate a key") { session in
            var publicKey = [UInt8](repeating: 0, count: Int(LM_P11_PUBLIC_KEY_LEN))
            let code = lm_p11_generate_ed25519(session, label, &publicKey)
            return (code, publicKey)
        }
    }

    public func relabel(_ old: String, to new: String) throws(PKCS11Error) {
        try call("label a key") { session in (lm_p11_relabel(session, old, new), ()) }
    }

    /// A pure Ed25519 signature by the key under `label`.
    public func sign(label: String, _ message: [UInt8]) throws(PKCS11Error) -> [UInt8] {
        try call("sign with key \(label)") { session in
            var signature = [UInt8](repeating: 0, count: Int(LM_P11_SIGNATURE_LEN))
            let code = message.withUnsafeBufferPointer { lm_p11_sign_ed25519(session, label, $0.baseAddress, $0.count, &signature) }
            return (code, signature)
        }
    }

    /// Destroys the key pair under `label`: it can never sign again.
    public func destroy(label: String) throws(PKCS11Error) {
        try call("destroy key \(label)") { session in (lm_p11_destroy(session, label), ()) }
    }

    /// Generates an AES-256 key in the token under `label` (it never leaves the token).
    public func generateSecretKey(label: String) throws(PKCS11Error) {
        try call("generate an AES key") { session in (lm_p11_generate_aes256(session, label), ()) }
    }

    /// AES-256-GCM under the token's secret key `label`: iv (12 bytes) ‖ ciphertext ‖ tag.
    public func seal(label: String, _ plaintext: [UInt8], aad: [UInt8]) throws(PKCS11Error) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let iv = (0..<Int(LM_P11_GCM_IV_LEN)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let sealed = try call("encrypt with key \(label)") { session in Self.encrypt(session, label, iv, aad, plaintext) }
        return iv + sealed
    }

    /// The reverse of `seal`.
    public func open(label: String, _ sealed: [UInt8], aad: [UInt8]) throws(PKCS11Error) -> [UInt8] {
        let ivLength = Int(LM_P11_GCM_IV_LEN)
        let iv = Array(sealed.prefix(ivLength))
        let body = Array(sealed.dropFirst(ivLength))
        return try call("decrypt with key \(label)") { session in Self.decrypt(session, label, iv, aad, body) }
    }

    private static func encrypt(_ session: OpaquePointer, _ label: String, _ iv: [UInt8], _ aad: [UInt8], _ plaintext: [UInt8]) -> (UInt, [UInt8]) {
        var out = [UInt8](repeating: 0, count: plaintext.count + Int(LM_P11_GCM_TAG_LEN))
        let code = lm_p11_aes_gcm_encrypt(session, label, iv, aad, aad.count, plaintext, plaintext.count, &out)
        return (code, out)
    }

    private static func decrypt(_ session: OpaquePointer, _ label: String, _ iv: [UInt8], _ aad: [UInt8], _ body: [UInt8]) -> (UInt, [UInt8]) {
        guard iv.count == Int(LM_P11_GCM_IV_LEN), body.count >= Int(LM_P11_GCM_TAG_LEN) else { return (LM_P11_SEALED_TOO_SHORT, []) }
        var out = [UInt8](repeating: 0, count: body.count - Int(LM_P11_GCM_TAG_LEN))
        let code = lm_p11_aes_gcm_decrypt(session, label, iv, aad, aad.count, body, body.count, &out)
        return (code, out)
    }

    private func call<T>(_ action: String, _ body: (OpaquePointer) -> (UInt, T)) throws(PKCS11Error) -> T {
        let result: Result<T, PKCS11Error> = session.withLock { handle in
            if handle == nil {
                switch open() {
                case .success(let opened): handle = opened
                case .failure(let error): return .failure(error)
                }
            }
            var (code, value) = body(handle!.pointer)
            if code != LM_P11_OK, lm_p11_needs_reopen(code) != 0 {
                let reopened = lm_p11_reopen(handle!.pointer)
                guard reopened == LM_P11_OK else { return .failure(PKCS11Error(code: reopened, action: action, token: configuration.tokenLabel)) }
                (code, value) = body(handle!.pointer)
            }
            return code == LM_P11_OK ? .success(value) : .failure(PKCS11Error(code: code, action: action, token: configuration.tokenLabel))
        }
        return try result.get()
    }

    private func open() -> Result<Handle, PKCS11Error> {
        var pointer: OpaquePointer?
        var message = [CChar](repeating: 0, count: 512)
        let code = lm_p11_open(configuration.module, configuration.tokenLabel, configuration.pin, &pointer, &message, message.count)
        guard code == LM_P11_OK, let pointer else {
            let detail = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .failure(PKCS11Error(code: code, action: "open the token", token: configuration.tokenLabel, detail: detail))
        }
        return .success(Handle(pointer: pointer))
    }
}

/// A failed token call, with the PKCS#11 code's name (CKR_PIN_INCORRECT, LM_P11_KEY_NOT_FOUND, ...).
public struct PKCS11Error: Error, Equatable, CustomStringConvertible {
    public let code: UInt
    public let action: String
    public let token: String
    public var detail: String = ""

    public var name: String { String(cString: lm_p11_error_name(code)) }
    public var keyNotFound: Bool { code == LM_P11_KEY_NOT_FOUND }
    public var labelExists: Bool { code == LM_P11_LABEL_EXISTS }

    public var description: String {
        "could not \(action) in PKCS#11 token \"\(token)\" (\(name)\(detail.isEmpty ? "" : ": \(detail)"))"
    }
}

/// CKR_ENCRYPTED_DATA_LEN_RANGE: a value too short to have been sealed.
private let LM_P11_SEALED_TOO_SHORT: UInt = 0x41

/// A certificate signer whose private key stays in the token.
public struct TokenSigner: CertificateSigner {
    public let kid: String
    public let publicKey: [UInt8]
    let token: PKCS11Token

    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        do {
            return try token.sign(label: kid, message)
        } catch {
            throw SigningCustody.unavailable(error, kid: kid)
        }
    }
}
