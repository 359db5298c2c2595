import LicensingWire
import NIOCore
import Testing

@Suite("ByteBuffer and [UInt8] agree")
struct ByteBufferTests {
    @Test func serializeIntoAppendsTheSameBytes() {
        func check<M: WireMessage>(_ message: M) {
            var buffer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
            message.serialize(into: &buffer)
            #expect(buffer.readableBytes == 3 + message.serializedSize)
            #expect(Array(buffer.readableBytesView) == [0xAA, 0xBB, 0xCC] + message.serializedBytes())
        }
        check(Samples.envelope)
        check(Samples.license)
        check(Samples.changeEvent)
        check(HealthCheckRequest())
    }

    @Test func serializeIntoAFullBufferGrowsIt() {
        var buffer = ByteBufferAllocator().buffer(capacity: 1)
        Samples.changeEvent.serialize(into: &buffer)
        #expect(Array(buffer.readableBytesView) == Samples.changeEvent.serializedBytes())
    }

    @Test func decodeReadsOnlyTheReadableBytes() throws {
        let encoded = Samples.envelope.serializedBytes()
        // Junk before the reader index and after a slice's end must be ignored.
        var buffer = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF] + encoded + [0x0F, 0x0F])
        buffer.moveReaderIndex(forwardBy: 3)
        let slice = buffer.getSlice(at: buffer.readerIndex, length: encoded.count)!
        #expect(try Envelope(buffer: slice) == Samples.envelope)
        #expect(try Envelope(buffer: slice) == Envelope(serializedBytes: encoded))
        // The whole rest, trailing junk included, is refused.
        #expect(throws: WireError.undecodable(Envelope.protoName)) { try Envelope(buffer: buffer) }
        // Decoding does not consume the buffer.
        #expect(slice.readableBytes == encoded.count)
    }

    @Test func decodeOfLicenseAndChangeEventAgree() throws {
        let license = Samples.license.serializedBytes()
        #expect(try License(buffer: ByteBuffer(bytes: license)) == License(serializedBytes: license))
        let event = Samples.changeEvent.serializedBytes()
        #expect(try ChangeEvent(buffer: ByteBuffer(bytes: event)) == ChangeEvent(serializedBytes: event))
    }
}
