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
    while offset < size {
        let end = min(size, offset + step)
        var buffer = channel.allocator.buffer(capacity: end - offset)
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[offset..<end]))
        offset = end
        // A frame too large closes the channel: the error surfaces here, and the stream ends
        // once the frames cut before it are read.
        let closed = (try? channel.writeInbound(buffer)) == nil
        while let frame = try? channel.readInbound(as: InboundFrame.self) {
            if case .envelope(let envelope) = frame {
                let again = try? Envelope(serializedBytes: envelope.serializedBytes())
                precondition(again == envelope, "an envelope does not survive encoding: \(envelope)")
            }
        }
        if closed { break }
    }
    // A frame left half read has its stall timer scheduled on the embedded loop, which keeps
    // the channel until the timer runs: run it, or every such input reads as a leak.
    channel.embeddedEventLoop.advanceTime(by: .seconds(60))
    _ = try? channel.finish()
    return 0
}
