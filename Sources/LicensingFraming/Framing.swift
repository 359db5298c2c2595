import LicensingWire
import NIOCore

/// Limits a connection is held to.
public struct FrameLimits: Sendable {
    /// Largest frame accepted; a longer length prefix closes the connection before any
    /// buffer for it is allocated.
    public var maxFrameLength: Int
    /// A frame started but not finished within this time closes the connection, so a
    /// stalled or malicious client cannot pin memory and a file descriptor forever.
    public var partialFrameTimeout: TimeAmount

    public init(maxFrameLength: Int = 4 << 20, partialFrameTimeout: TimeAmount = .seconds(10)) {
        self.maxFrameLength = maxFrameLength
        self.partialFrameTimeout = partialFrameTimeout
    }
}

public enum FrameError: Error, Equatable, CustomStringConvertible {
    case frameTooLarge(length: Int, limit: Int)
    case stalledMidFrame(TimeAmount)

    public var description: String {
        switch self {
        case .frameTooLarge(let length, let limit): return "frame of \(length) bytes exceeds the limit of \(limit)"
        case .stalledMidFrame(let timeout): return "a partial frame was not finished within \(timeout)"
        }
    }
}

/// Splits the byte stream into frames: 4-byte big-endian length, then that many bytes.
package final class FrameReader: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer

    private let limits: FrameLimits
    private var pending: ByteBuffer?
    private var stallTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// The server has stopped reading (it holds as many calls as a connection may have):
    /// a frame left half read meanwhile is not the peer stalling.
    private var clockPaused = false

    package init(limits: FrameLimits) {
        self.limits = limits
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if pending == nil {
            pending = incoming
        } else {
            pending!.writeBuffer(&incoming)
        }
        var finishedFrame = false
        do {
            while let frame = try nextFrame() {
                finishedFrame = true
                context.fireChannelRead(wrapInboundOut(frame))
            }
        } catch {
            pending = nil
            cancelStallTimer()
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        if let buffer = pending, buffer.readableBytes > 0 {
            if buffer.readerIndex > 64 * 1024 { pending!.discardReadBytes() }
            // The clock starts when a frame starts: more bytes of the same frame do not
            // restart it, or a client trickling a byte at a time could hold it open forever.
            if !clockPaused, finishedFrame || stallTimer == nil { armStallTimer(context: context) }
        } else {
            pending = nil
            cancelStallTimer()
        }
    }

    private func nextFrame() throws(FrameError) -> ByteBuffer? {
        guard var buffer = pending,
            let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self)
        else { return nil }
        guard Int(length) <= limits.maxFrameLength else {
            throw .frameTooLarge(length: Int(length), limit: limits.maxFrameLength)
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let frame = buffer.readSlice(length: Int(length))!
        pending = buffer
        return frame
    }

    private func armStallTimer(context: ChannelHandlerContext) {
        stallTimer?.cancel()
        let timeout = limits.partialFrameTimeout
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        stallTimer = context.eventLoop.scheduleTask(in: timeout) {
            let context = loopBound.value
            context.fireErrorCaught(FrameError.stalledMidFrame(timeout))
            context.close(promise: nil)
        }
    }

    private func cancelStallTimer() {
        stallTimer?.cancel()
        stallTimer = nil
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        cancelStallTimer()
        self.context = nil
    }

    /// Reading is held: the clock for a half-read frame stops.
    package func pauseStallClock() {
        clockPaused = true
        cancelStallTimer()
    }

    /// Reading goes on: a half-read frame gets the whole timeout again from now.
    package func resumeStallClock() {
        guard clockPaused else { return }
        clockPaused = false
        if let context, let buffer = pending, buffer.readableBytes > 0 { armStallTimer(context: context) }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        cancelStallTimer()
        context.fireChannelInactive()
    }
}

/// What arrives from a peer once a frame is cut out.
public enum InboundFrame: Sendable {
    case envelope(Envelope)
    /// A frame whose bytes are not an Envelope; the call it belongs to cannot be known.
    case undecodable(WireError)
}

/// Decodes frames into envelopes and frames outgoing envelopes with their length.
package final class EnvelopeCodec: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = InboundFrame
    package typealias OutboundIn = Envelope
    package typealias OutboundOut = ByteBuffer

    package init() {}

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        do {
            let envelope = try Envelope(buffer: frame)
            context.fireChannelRead(wrapInboundOut(.envelope(envelope)))
        } catch {
            context.fireChannelRead(wrapInboundOut(.undecodable(error)))
        }
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let envelope = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64 + envelope.payload.count)
        buffer.moveWriterIndex(forwardBy: 4)
        envelope.serialize(into: &buffer)
        buffer.setInteger(UInt32(buffer.readableBytes - 4), at: buffer.readerIndex, endianness: .big)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Installs the framing and envelope codec shared by servers and clients.
    public func addEnvelopeFraming(limits: FrameLimits) throws {
        try addHandler(FrameReader(limits: limits))
        try addHandler(EnvelopeCodec())
    }
}
