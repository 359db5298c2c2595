import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingTestSupport
import LicensingWire
import Testing

/// Signing keys in a PKCS#11 token (SoftHSM2, a token of the test's own in its folder):
/// issuance and validation sign through the token, the database holds no private key, the
/// token's keys cannot be extracted, rotation works as before, and while the token is gone
/// signing answers UNAVAILABLE with a clear message but unsigned validations go on.
@Suite(.serialized) struct HardwareKeyTests {
    static let module = "/usr/lib/softhsm/libsofthsm2.so"

    /// Key objects in a SoftHSM2 token directory.
    static func keyObjects(_ tokens: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: tokens).reduce(0) { count, token in
            count + (try FileManager.default.contentsOfDirectory(atPath: "\(tokens)/\(token)")).filter { $0.hasSuffix(".object") && $0 != "token.object" }.count
        }
    }

    /// A SoftHSM2 token of the test's own, in its folder: the settings that name it, and
    /// the token directory (moving it away takes the token away).
    static func token(in stack: Stack) async throws -> (settings: [String: String], directory: String) {
        let tokens = "\(stack.folder)/hsm/tokens"
        try FileManager.default.createDirectory(atPath: tokens, withIntermediateDirectories: true)
        let conf = "\(stack.folder)/hsm/softhsm2.conf"
        try "directories.tokendir = \(tokens)\nobjectstore.backend = file\nlog.level = ERROR\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let (status, output) = try await Stack.run(
            "/usr/bin/softhsm2-util", ["--init-token", "--free", "--label", "lm-signing", "--so-pin", "1234", "--pin", "4321"],
            environment: ["SOFTHSM2_CONF": conf], absolute: true)
        #expect(status == 0, "\(output)")
        let pinFile = "\(stack.folder)/hsm/pin"
        try "4321\n".write(toFile: pinFile, atomically: true, encoding: .utf8)
        let settings = [
            "LM_PKCS11_MODULE": module, "LM_PKCS11_TOKEN": "lm-signing", "LM_PKCS11_PIN_FILE": pinFile, "SOFTHSM2_CONF": conf,
        ]
        return (settings, tokens)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: module), "SoftHSM2 is installed by deploy/install-deps"))
    func signingKeysLiveInTheTokenAndSigningWaitsForIt() async throws {
        let stack = try Stack()
        let (hsm, tokens) = try await Self.token(in: stack)
        let custody = hsm.merging(["LM_SIGNING_KEYS": "pkcs11"]) { $1 }
        stack.environment["issuance"] = custody
        stack.environment["validation"] = custody
        try await stack.startAll()
        try await stack.waitUntilGatewaySees("validation")
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }

        // The first key was made in the token: the database holds its public half only.
        let keys = try await admin.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys
        #expect(keys.count == 1)
        let first = try #require(keys.first)
        let database = try DatabaseQueue(path: "\(stack.folder)/issuance.sqlite")
        let sealed = try await database.read { db in try Data.fetchOne(db, sql: "SELECT sealed_private_key FROM signing_key WHERE kid = ?", arguments: [first.kid]) }
        try database.close()
        #expect(sealed?.isEmpty == true)
        // The token holds the pair (SoftHSM keeps one file per object; the token's own is
        // token.object). That the private key is not extractable is checked on the C side
        // (Tests/pkcs11), where the same generation code runs.
        #expect(try Self.keyObjects(tokens) == 2)

        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .enterprise, durationSeconds: 365 * 86400, features: ["render"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Token Co", email: "ops@token.test"))
        let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let license = issued.license!.id

        func publicKeys() async throws -> [String: [UInt8]] {
            Dictionary(uniqueKeysWithValues: try await admin.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys.map { ($0.kid, $0.publicKey) })
        }
        func signedValidation() async throws -> ValidateResponse {
            try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, nonce: Array("n-\(UUID())".utf8)))
        }
        func verifies(_ answer: ValidateResponse, _ keys: [String: [UInt8]]) -> Bool {
            guard let key = keys[answer.kid], let publicKey = try? Curve25519.Signing.PublicKey(rawRepresentation: key) else { return false }
            return publicKey.isValidSignature(answer.signature, for: answer.statement)
        }

        // Issuance signs certificates through the token; validation signs answers through it.
        let certificate = try await admin.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: license))
        #expect(certificate.kid == first.kid)
        _ = try LicenseCertificates.verify(certificate.armored, publicKeys: try await publicKeys(), now: Int64(Date().timeIntervalSince1970))
        var answer = try await signedValidation()
        var known = try await publicKeys()
        #expect(answer.valid && answer.kid == first.kid && verifies(answer, known), "\(answer)")

        // Rotation makes the next key in the token; the older certificate still verifies.
        let rotated = try await admin.call(IssuanceMethods.rotateSigningKey, CreateSigningKeyRequest())
        #expect(rotated.kid != first.kid && rotated.current)
        #expect(try Self.keyObjects(tokens) == 4)
        let next = try await admin.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: license))
        #expect(next.kid == rotated.kid)
        _ = try LicenseCertificates.verify(certificate.armored, publicKeys: try await publicKeys(), now: Int64(Date().timeIntervalSince1970))
        var lastAnswer = ""
        #expect(await eventually(within: .seconds(20), every: .milliseconds(100)) {
            do {
                let answer = try await signedValidation()
                lastAnswer = "\(answer)"
                return answer.kid == rotated.kid
            } catch {
                lastAnswer = "\(error)"
                return false
            }
        }, "\(lastAnswer)")
        answer = try await signedValidation()
        known = try await publicKeys()
        #expect(verifies(answer, known))
        // Retiring the old key destroys it in the token.
        _ = try await admin.call(IssuanceMethods.retireSigningKey, GetByIdRequest(id: first.kid))
        #expect(try Self.keyObjects(tokens) == 2, "the rotated pair stays, the retired pair is destroyed")

        // The token goes away: signing says so; unsigned validations go on.
        let away = "\(stack.folder)/hsm/away"
        try FileManager.default.moveItem(atPath: tokens, toPath: away)
        try FileManager.default.createDirectory(atPath: tokens, withIntermediateDirectories: true)
        do {
            _ = try await admin.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: license))
            Issue.record("a certificate was signed without the token")
        } catch let error as RPCError {
            #expect(error.code == .unavailable && error.message.contains("signing is unavailable") && error.message.contains("lm-signing"), "\(error)")
        }
        do {
            _ = try await signedValidation()
            Issue.record("an answer was signed without the token")
        } catch let error as RPCError {
            #expect(error.code == .unavailable && error.message.contains("PKCS#11 token"), "\(error)")
        }
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey)).valid)

        // It comes back: signing resumes by itself, with the same key.
        try FileManager.default.removeItem(atPath: tokens)
        try FileManager.default.moveItem(atPath: away, toPath: tokens)
        let resumed = try await admin.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: license))
        #expect(resumed.kid == rotated.kid)
        answer = try await signedValidation()
        known = try await publicKeys()
        #expect(answer.valid && answer.kid == rotated.kid && verifies(answer, known))
    }

    /// The master key from the token: the key file holds versions wrapped by an AES key
    /// that never leaves the token, so the file alone opens nothing; the services unwrap
    /// them at start and on rotation, and licensectl does for backups.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: module), "SoftHSM2 is installed by deploy/install-deps"))
    func theMasterKeyIsWrappedByAKeyInTheToken() async throws {
        let stack = try Stack()
        let (hsm, _) = try await Self.token(in: stack)
        let keyFile = "\(stack.folder)/hsm/master-key"
        var (status, output) = try await Stack.run("licensectl", ["master-key", "add", "--key-file", keyFile, "--pkcs11-key", "master-wrap"], environment: hsm)
        #expect(status == 0 && output.contains("added master key version"), "\(output)")
        let text = try String(contentsOfFile: keyFile, encoding: .utf8)
        #expect(text.hasPrefix("pkcs11:master-wrap:") && text.split(separator: "\n").count == 1, "\(text)")
        #expect(throws: (any Error).self) { try Secrets.parseVersions(text) }

        let settings = hsm.merging(["LM_MASTER_KEY_FILE": keyFile]) { $1 }
        stack.environment["issuance"] = settings
        stack.environment["validation"] = settings
        try await stack.startAll()
        try await stack.waitUntilGatewaySees("validation")
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Wrapped Co", email: "ops@wrapped.test"))
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .enterprise, durationSeconds: 86400)))
        let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let signed = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, nonce: Array("n".utf8)))
        #expect(signed.valid && !signed.signature.isEmpty)

        // Rotation to a second wrapped version, online.
        (status, output) = try await Stack.run("licensectl", ["master-key", "add", "--key-file", keyFile, "--pkcs11-key", "master-wrap"], environment: hsm)
        #expect(status == 0, "\(output)")
        let second = try #require(output.split(separator: " ").dropFirst(4).first.map(String.init), "\(output)")
        (status, output) = try await stack.ctl(["master-key", "rotate"])
        #expect(status == 0 && output.contains("issuance  current \(second)") && output.contains("validation  current \(second)"), "\(output)")

        // licensectl needs the token too: without it the file opens nothing.
        (status, output) = try await Stack.run("licensectl", ["backup", "--to", "\(stack.folder)/b1", "--master-key", keyFile, "--services", "issuance", "--gateway", "unix:\(stack.folder)/run/gateway.sock"], environment: ["LM_API_KEY": stack.adminKey])
        #expect(status != 0 && output.contains("needs the PKCS#11 token"), "\(output)")
        (status, output) = try await Stack.run("licensectl", ["backup", "--to", "\(stack.folder)/b2", "--master-key", keyFile, "--services", "issuance", "--gateway", "unix:\(stack.folder)/run/gateway.sock"], environment: hsm.merging(["LM_API_KEY": stack.adminKey]) { $1 })
        #expect(status == 0 && output.contains("master key \(second)"), "\(output)")

        // A restart unwraps the versions again.
        await stack.stop("issuance")
        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        try await stack.waitUntilGatewaySees("issuance")
        #expect(try await admin.call(IssuanceMethods.getCustomer, GetByIdRequest(id: customer.id)).email == "ops@wrapped.test")
    }
}
