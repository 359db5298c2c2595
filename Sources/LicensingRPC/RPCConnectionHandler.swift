#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LicensingWire
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// The calls of one connection, handled on the connection's event loop. A call whose
/// handler is immediate is answered inside the read, and the answers of one read go out in
/// one flush; other calls run as tasks on the same loop, so reading, handling and
/// answering involve no hop between threads.
final class RPCConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundIn = Envelope
    typealias OutboundOut = Envelope

    /// A unary call runs to its end once started; a feed can be stopped.
    private enum CallState {
        case unary
        case stream(Task<Void, Never>)
    }

    private let core: ServerCore
    private let executor: EventLoopTaskExecutor
    private var context: ChannelHandlerContext?
    private var frameReader: FrameReader?
    private var peer = "unix"
    private var localUser: String?
    private var calls: [UInt64: CallState] = [:]
    /// Calls as the interceptors admitted (or refused) them, told how they ended.
    private var intercepted: [UInt64: ServerCall] = [:]
    /// Requests read while the connection had its fill of calls in flight (one read can
    /// carry many frames); reading stays held until they have started.
    private var waiting = CircularBuffer<(request: Envelope, arrived: ContinuousClock.Instant)>()
    /// Flushing, back-pressure and closing, decided by rules tested on their own.
    private var state = ConnectionState()

    init(core: ServerCore, eventLoop: any EventLoop) {
        self.core = core
        self.executor = EventLoopTaskExecutor(eventLoop)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        frameReader = try? context.pipeline.syncOperations.handler(type: FrameReader.self)
    }

    func channelActive(context: ChannelHandlerContext) {
        // Who calls, for limits on failed authentication: the address of a TCP caller; the
        // user and process of a local one (every Unix-socket caller has the same address).
        peer = context.channel.remoteAddress?.ipAddress ?? Self.localPeer(context.channel)
        if peer.hasPrefix("unix:uid=") { localUser = peer.split(separator: ":").prefix(2).joined(separator: ":") }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        state.readStarted()
        switch unwrapInboundIn(data) {
        case .undecodable(let error):
            guard state.acceptsCalls else { return }
            // The call id is unknown, so no call can be answered: say why, then close.
            send(core.reply(0, .response, RPCError(.invalidArgument, "\(error)")))
            drain()
        case .envelope(let envelope):
            switch envelope.kind {
            case .request:
                if calls.count >= core.maxCallsPerConnection || !waiting.isEmpty {
                    waiting.append((envelope, ContinuousClock.now))
                } else {
                    start(envelope, arrived: ContinuousClock.now)
                }
            case .cancel:
                cancel(envelope.callId)
            default:
                let error = RPCError(.invalidArgument, "a client may send only REQUEST and CANCEL frames, not \(envelope.kind)")
                send(core.reply(envelope.callId, .response, error))
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if state.readEnded() { context.flush() }
        context.fireChannelReadComplete()
    }

    /// Holds reading while the connection has its fill of calls in flight or its peer is
    /// not taking answers: the server's memory stays bounded however fast a client sends.
    func read(context: ChannelHandlerContext) {
        if state.readRequested(busy: busy(context)) {
            context.read()
        } else {
            frameReader?.pauseStallClock()
        }
    }

    /// Full of calls, or the peer takes no answers: no more requests are read.
    private func busy(_ context: ChannelHandlerContext) -> Bool {
        calls.count >= core.maxCallsPerConnection || !waiting.isEmpty || !context.channel.isWritable
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReading()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The caller is gone: feeds end; unary calls running finish (their answers go
        // nowhere); calls not started never start — the caller has been told they failed.
        state.drain()
        waiting.removeAll()
        for case .stream(let task) in calls.values { task.cancel() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            // A client that cannot complete the handshake (untrusted CA, plaintext, wrong certificate).
            core.logger.notice("TLS handshake failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        } else {
            core.logger.debug("connection closed", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Graceful shutdown: feeds end, calls in flight answer, then the connection closes.
    func drain() {
        state.drain()
        for case .stream(let task) in calls.values { task.cancel() }
        closeIfDrained()
    }

    // MARK: Calls

    /// `arrived`: when the request was read; a call that waited for room is timed from then.
    private func start(_ request: Envelope, arrived started: ContinuousClock.Instant) {
        let id = request.callId
        let method = request.method
        guard state.acceptsCalls else {
            return send(core.reply(id, .response, RPCError(.unavailable, "the server is stopping; retry on another instance or later")))
        }
        guard calls[id] == nil else {
            // Answering under that id would reach the caller as the first call's answer: the
            // peer is told on call id 0, like any frame that breaks the protocol, and the
            // connection closes once the calls in flight have answered.
            send(core.reply(0, .response, RPCError(.invalidArgument, "call id \(id) is already in flight on this connection")))
            return drain()
        }
        guard request.timeoutMicros >= 0 else {
            return finish(id, method, started, .response, error: RPCError(.deadlineExceeded, "the deadline of \(method) expired before it reached the server"))
        }
        guard let handler = core.router.handler(for: method) else {
            return finish(id, method, started, .response, error: .unimplemented(method))
        }
        // A caller's budget beyond a day is a day: no deadline arithmetic downstream can overflow.
        let timeout = request.timeoutMicros == 0 ? core.defaultTimeout : .microseconds(min(request.timeoutMicros, 86_400_000_000))
        let deadline = started + timeout
        var call = ServerCall(
            method: method, payload: request.payload, metadata: RPCMetadata(request.metadata), deadline: deadline, logger: core.logger,
            peer: peer, localUser: localUser, transportSpecific: executor.eventLoop)
        if !core.router.interceptors.isEmpty {
            do {
                for interceptor in core.router.interceptors {
                    defer { intercepted[id] = call }
                    try interceptor.admit(&call)
                }
            } catch {
                return finish(id, method, started, .response, error: error)
            }
        }

        switch handler {
        case .immediate(let body):
            let reply: ImmediateReply
            do {
                reply = try body(call)
            } catch {
                return finish(id, method, started, .response, error: core.status(for: error, method: method))
            }
            switch reply {
            case .answer(let payload):
                finishUnary(id, method, started, deadline, .success(payload))
            case .later(let work):
                runUnary(id, method, started, deadline, work)
            case .pending(let answer):
                calls[id] = .unary
                let loop = executor.eventLoop
                let handler = NIOLoopBound(self, eventLoop: loop)
                answer.whenComplete { result in
                    loop.onLoop { handler.value.finishUnary(id, method, started, deadline, result) }
                }
            }
        case .unary(let body):
            let admitted = call
            runUnary(id, method, started, deadline) { try await body(admitted) }
        case .serverStreaming(let body):
            runStream(id, method, started, call, body)
        }
    }

    private func runUnary(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ deadline: ContinuousClock.Instant,
        _ work: @escaping @Sendable () async throws -> [UInt8]
    ) {
        calls[id] = .unary
        let loop = executor.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        Task(executorPreference: executor) {
            let result: Result<[UInt8], any Error>
            do {
                result = .success(try await work())
            } catch {
                result = .failure(error)
            }
            loop.onLoop { handler.value.finishUnary(id, method, started, deadline, result) }
        }
    }

    private func runStream(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ call: ServerCall,
        _ body: @escaping @Sendable (ServerCall, ResponseStream) async throws -> Void
    ) {
        guard let channel = context?.channel else { return }
        let core = self.core
        let stream = ResponseStream { payload in
            try Task.checkCancellation()
            let message = Envelope(callId: id, kind: .streamMessage, payload: payload)
            if let tooLarge = core.oversized(message, method: method) { throw tooLarge }
            // Written from the loop, in order with STREAM_END, which follows the last of them.
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.writeAndFlush(message, promise: written)
            try await withTaskCancellationHandler {
                try await written.futureResult.get()
            } onCancel: {
                // A feed cancelled while its peer takes nothing more would wait for this
                // write forever (and hold up stopping): if it has not gone out within a
                // grace period, the peer loses the connection.
                channel.eventLoop.execute {
                    let grace = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
                    written.futureResult.whenComplete { _ in grace.cancel() }
                }
            }
        }
        let loop = executor.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        // The task starts on this loop after this returns, so it is registered before it can finish.
        calls[id] = .stream(Task(executorPreference: executor) {
            var failure: RPCError?
            do {
                try await body(call, stream)
            } catch {
                failure = core.status(for: error, method: method)
            }
            loop.onLoop { [failure] in handler.value.finish(id, method, started, .streamEnd, error: failure) }
        })
    }

    private func finishUnary(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ deadline: ContinuousClock.Instant, _ result: Result<[UInt8], any Error>
    ) {
        switch CallStatus.unary(result, method: method, deadline: deadline, logger: core.logger) {
        case .success(let payload): finish(id, method, started, .response, payload: payload)
        case .failure(let error): finish(id, method, started, .response, error: error)
        }
    }

    private func finish(
        _ id: UInt64, _ method: String, _ started: ContinuousClock.Instant, _ kind: FrameKind, payload: [UInt8] = [], error: RPCError? = nil
    ) {
        calls.removeValue(forKey: id)
        var reply = core.reply(id, kind, error)
        reply.payload = payload
        var code = error?.code ?? .ok
        if let tooLarge = core.oversized(reply, method: method) {
            reply = core.reply(id, kind, tooLarge)
            code = tooLarge.code
        }
        let elapsed = ContinuousClock.now - started
        core.metrics.record(method: method, code: code, duration: elapsed)
        if let call = intercepted.removeValue(forKey: id) {
            for interceptor in core.router.interceptors { interceptor.finished(call, code: code, after: elapsed) }
        }
        send(reply)
        startWaiting()
        resumeReading()
        closeIfDrained()
    }

    /// Starts the requests that waited for room, oldest first. A call that finishes at once
    /// comes back here; the flag keeps that from recursing.
    private func startWaiting() {
        guard state.beginStartingWaiting() else { return }
        defer { state.endStartingWaiting() }
        while calls.count < core.maxCallsPerConnection, let next = waiting.popFirst() {
            start(next.request, arrived: next.arrived)
        }
    }

    /// Answers written while a read is being handled go out together at its end.
    private func send(_ envelope: Envelope) {
        guard let context else { return }
        if state.answerReady() {
            context.writeAndFlush(wrapOutboundOut(envelope), promise: nil)
        } else {
            context.write(wrapOutboundOut(envelope), promise: nil)
        }
    }

    private func cancel(_ id: UInt64) {
        // A call that has not started never will; its caller has stopped waiting.
        if let index = waiting.firstIndex(where: { $0.request.callId == id }) {
            waiting.remove(at: index)
            return resumeReading()
        }
        // Unary calls run to the end (a mutation half done is worse than an unwanted answer); feeds stop.
        if case .stream(let task) = calls[id] { task.cancel() }
    }

    private func resumeReading() {
        guard let context, state.roomMade(busy: busy(context)) else { return }
        frameReader?.resumeStallClock()
        context.read()
    }

    private func closeIfDrained() {
        guard let context else { return }
        let (close, flushFirst) = state.closeIfIdle(calls.isEmpty && waiting.isEmpty)
        guard close else { return }
        if flushFirst { context.flush() }
        // Output first: that close waits for the answers still queued for the socket, which
        // a full close would drop; then the rest.
        let channel = context.channel
        let outputClosed = context.eventLoop.makePromise(of: Void.self)
        outputClosed.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.close(mode: .output, promise: outputClosed)
    }
}
