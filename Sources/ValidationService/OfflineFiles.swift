import Foundation
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Offline license files: a signed certificate of the license's facts, bound to one machine,
// optionally encrypted with the license key, for machines that cannot reach the server.

extension ValidationService {
    public func createOfflineLicense(_ request: CreateOfflineLicenseRequest, _ call: ServerCall) async throws -> OfflineLicense {
        try Check.fingerprint(request.fingerprint)
        guard request.validSeconds >= 0 else { throw RPCError.invalidArgument("valid_seconds must not be negative") }
        let now = clock.now
        let key: LicenseKey?
        let facts: LicenseFacts
        if request.licenseKey.isEmpty, !request.licenseId.isEmpty {
            guard !request.encrypt else {
                throw RPCError.invalidArgument("encrypt needs license_key: an encrypted file opens only with the key it was made with")
            }
            guard let found = try await self.facts(license: request.licenseId, call) else { throw RPCError.notFound("no license \(request.licenseId)") }
            (key, facts) = (nil, found)
        } else {
            guard let found = try await lookUp(request.licenseKey, call) else { throw RPCError.notFound("no license has this key") }
            (key, facts) = found
        }
        if request.encrypt, key == nil {
            throw RPCError.invalidArgument("encrypt works only with this system's own key format; this license's key was imported")
        }
        var usable = facts
        usable.licenseType = .unspecified
        let decision = LicenseDecider.decide(usable, ValidationQuery(), now: now)
        guard decision.allows else {
            throw RPCError.failedPrecondition("\(decision.reason): \(decision.detail)")
        }
        guard request.validSeconds <= maxOfflineSeconds else {
            throw RPCError.invalidArgument(
                "an offline license file is valid for at most \(maxOfflineSeconds / 86400) days (setting offline-max-days); "
                    + "\(request.validSeconds / 86400) days were asked for")
        }
        let seconds = request.validSeconds == 0 ? maxOfflineSeconds : request.validSeconds
        let fingerprintHash = LicenseCertificates.fingerprintHash(request.fingerprint)
        guard let certificate = try await certificate(for: facts, fingerprintHash: fingerprintHash, validFor: seconds, now: now) else {
            throw RPCError.unavailable("no signing key has reached validation yet; try again shortly")
        }
        // A file is an activation of a machine that cannot call home: it takes a machine
        // slot (listed with the file's end) until the file ends or the machine is deactivated.
        let notAfter = certificate.payload?.notAfter ?? now.saturatingAdd(seconds)
        let bound = try await writes.write { db in
            try Self.bind(facts, fingerprintHash, name: "", platform: "offline", offlineUntil: max(notAfter, now + 1), now: now, in: db)
        }
        guard bound.0 == .valid else {
            throw RPCError.failedPrecondition("\(bound.0): \(bound.2)")
        }
        let armored = if request.encrypt, let key { OfflineLicenseFile.encrypt(certificate.armored, licenseKey: key) } else { certificate.armored }
        return OfflineLicense(
            armored: armored, notBefore: certificate.payload?.notBefore ?? now, notAfter: certificate.payload?.notAfter ?? now, kid: certificate.kid)
    }
}
