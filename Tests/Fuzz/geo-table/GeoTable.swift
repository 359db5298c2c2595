import LicensingCore

/// The geo table parser (IP ranges to countries) on any text, and a look-up in what it parsed.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGeoTable(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let table = try? GeoTable(parsing: text) else { return 0 }
    for address in ["10.1.2.3", "::1", "2001:db8::1", "255.255.255.255", "0.0.0.0"] { _ = table.country(of: address) }
    return 0
}
