import LicensingWire

/// The envelope decoder on any bytes: it decodes or refuses, and what it decodes encodes and
/// decodes to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvelope(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let envelope = try? Envelope(serializedBytes: bytes) else { return 0 }
    let again = try? Envelope(serializedBytes: envelope.serializedBytes())
    precondition(again == envelope, "an envelope does not survive encoding: \(envelope)")
    return 0
}
