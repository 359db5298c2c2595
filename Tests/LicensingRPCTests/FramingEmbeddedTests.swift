import LicensingRPC
import LicensingWire
import NIOCore
import NIOEmbedded
import Testing

extension RPCTests {
    /// The framing and envelope codec on an `EmbeddedChannel`: no socket, and time that
    /// moves only when the test moves it.
    @Suite("Framing on an embedded channel")
    struct FramingEmbeddedTests {
        static let limits = FrameLimits(maxFrameLength: 1024, partialFrameTimeout: .seconds(10))

        func channel() throws -> EmbeddedChannel {
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addEnvelopeFraming(limits: Self.limits)
            _ = try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/embedded")).wait()
            return channel
        }

        func envelopes(_ channel: EmbeddedChannel) throws -> [Envelope] {
            var out: [Envelope] = []
            while let frame = try channel.readInbound(as: InboundFrame.self) {
                if case .envelope(let envelope) = frame { out.append(envelope) }
            }
            return out
        }

        @Test func framesCutAnywhereAndFramesTogetherComeOutWhole() throws {
            let channel = try channel()
            let first = frame(Envelope(callId: 1, kind: .request, method: HealthMethods.check.name))
            let second = frame(Envelope(callId: 2, kind: .request, method: HealthMethods.check.name, payload: [1, 2, 3]))
            // The first frame in three pieces, cut inside the length prefix and the body.
            try channel.writeInbound(ByteBuffer(bytes: first[0..<2]))
            try channel.writeInbound(ByteBuffer(bytes: first[2..<7]))
            #expect(try envelopes(channel).isEmpty)
            try channel.writeInbound(ByteBuffer(bytes: first[7...] + second))
            #expect(try envelopes(channel).map(\.callId) == [1, 2])
            #expect(channel.isActive)
        }

        @Test func aLengthOverTheLimitClosesBeforeTheBodyArrives() throws {
            let channel = try channel()
            #expect(throws: FrameError.frameTooLarge(length: 1025, limit: 1024)) {
                try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0x04, 0x01]))
            }
            #expect(!channel.isActive)
        }

        @Test func aStalledPartialFrameClosesAfterTheTimeoutAndNotBefore() throws {
            let channel = try channel()
            try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 50, 0x08]))
            channel.embeddedEventLoop.advanceTime(by: .seconds(9))
            #expect(channel.isActive, "closed before the 10 s timeout")
            // More bytes of the same frame do not restart the clock.
            try channel.writeInbound(ByteBuffer(bytes: [0x01]))
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
            #expect(!channel.isActive, "a trickled frame kept the connection open")
        }

        @Test func anIdleConnectionBetweenFramesIsNotCut() throws {
            let channel = try channel()
            try channel.writeInbound(ByteBuffer(bytes: frame(Envelope(callId: 1, kind: .request, method: HealthMethods.check.name))))
            channel.embeddedEventLoop.advanceTime(by: .seconds(3600))
            #expect(channel.isActive)
            #expect(try envelopes(channel).count == 1)
        }

        @Test func bytesThatAreNotAnEnvelopeComeOutAsUndecodable() throws {
            let channel = try channel()
            try channel.writeInbound(ByteBuffer(bytes: frame([0xFF, 0xFF, 0xFF])))
            guard case .undecodable? = try channel.readInbound(as: InboundFrame.self) else {
                Issue.record("an undecodable frame was not reported")
                return
            }
        }

        @Test func outgoingEnvelopesAreFramedWithTheirLength() throws {
            let channel = try channel()
            let envelope = Envelope(callId: 7, kind: .response, payload: [9, 9], status: Status(code: .ok))
            try channel.writeOutbound(envelope)
            let buffer = try #require(try channel.readOutbound(as: ByteBuffer.self))
            #expect(Array(buffer.readableBytesView) == frame(envelope))
        }
    }
}
