import LicensingRPCCore
import LicensingWire

/// Every method's request decoder, as servers run it (strings checked, integers bounded by
/// `RequestBounds`): the first two bytes choose the method from `WireServices.requestDecoders`
/// (generated from the contracts, so a new method is covered without a change here), the
/// rest is the payload.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequests(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let decoders = WireServices.requestDecoders
    let index = (Int(data[0]) << 8 | Int(data[1])) % decoders.count
    let payload = Array(UnsafeBufferPointer(start: data + 2, count: size - 2))
    do {
        try decoders[index].decode(payload, integers: RequestBounds.check)
    } catch {
        // Refused with a reason: what a caller would read must name something.
        precondition(!"\(error)".isEmpty)
    }
    return 0
}
