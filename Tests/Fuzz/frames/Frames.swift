import LicensingFraming
import LicensingWire
import NIOCore
import NIOEmbedded

/// The frame reader and envelope codec on a byte stream cut where the first byte says, as
/// a socket may cut it anywhere. Every envelope decoded must encode and decode to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let first = bytes.first else { return 0 }
    let channel = EmbeddedChannel()
    try! channel.pipeline.syncOperations.addEnvelopeFraming(limits: FrameLimits(maxFrameLength: 64 * 1024))
    let step = Int(first) + 1
    var offset = 1
    while offset < size, channel.isActive {
        let end = min(size, offset + step)
        var buffer = channel.allocator.buffer(capacity: end - offset)
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[offset..<end]))
        // A frame too large, or one that does not decode, closes the channel: an error here.
        _ = try? channel.writeInbound(buffer)
        offset = end
        while let frame = try? channel.readInbound(as: InboundFrame.self) {
            if case .envelope(let envelope) = frame {
                let again = try? Envelope(serializedBytes: envelope.serializedBytes())
                precondition(again == envelope, "an envelope does not survive encoding: \(envelope)")
            }
        }
    }
    _ = try? channel.finish()
    return 0
}
