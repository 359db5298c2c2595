import LicensingCore

private let secret = try! KeyHashSecret(bytes: Array(repeating: 7, count: 32))

/// License key and imported key parsing on any text: a key that parses prints as a key that
/// parses to itself, and hashes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLicenseKey(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let key = try? LicenseKey(parsing: text) {
        precondition((try? LicenseKey(parsing: key.description)) == key, "\(text) parses, its printed form does not")
        _ = key.hash(secret: secret)
    }
    if let key = try? ImportedKey(parsing: text) {
        _ = key.hash(secret: secret)
    }
    return 0
}
