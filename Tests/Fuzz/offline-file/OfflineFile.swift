import LicensingCore
import LicensingWire

/// The key the seed corpus's files are signed with, and the license key the encrypted ones
/// open with (Tests/Fuzz/seed writes them).
let fuzzSigningKey = try! CertificateSigningKey(privateKey: Array(repeating: 5, count: 32))
let fuzzLicenseKey: LicenseKey = {
    // Version 1, all-zero bits, and whichever check symbol makes it a key.
    for check in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" {
        if let key = try? LicenseKey(parsing: "1" + String(repeating: "0", count: 26) + String(check)) { return key }
    }
    fatalError("no check symbol completes the fuzz license key")
}()

/// Offline license files, certificates and signed validation answers on any text: each is
/// verified against the fuzz key or refused with a reason, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOfflineFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let text = String(decoding: bytes, as: UTF8.self)
    let keys = [fuzzSigningKey.kid: fuzzSigningKey.publicKey]
    _ = try? OfflineLicenseFile.verify(text, licenseKey: fuzzLicenseKey, publicKeys: keys, fingerprint: "fuzz-machine", now: 1_800_000_000, lastSeen: 0)
    _ = try? LicenseCertificates.verify(text, publicKeys: keys, now: 1_800_000_000, fingerprint: "fuzz-machine")
    if let response = try? ValidateResponse(serializedBytes: bytes) {
        _ = try? ValidationAnswer.verify(response, nonce: Array(repeating: 1, count: 16), publicKeys: keys, now: 1_800_000_000)
    }
    return 0
}
