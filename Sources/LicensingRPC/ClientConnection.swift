import LicensingWire
import NIOCore
import NIOSSL
import Synchronization

/// The calls waiting for answers on one client connection.
final class PendingCalls: Sendable {
    enum Waiter {
        case unary(EventLoopPromise<Envelope>, Scheduled<Void>?)
        case stream(AsyncThrowingStream<[UInt8], any Error>.Continuation, Scheduled<Void>?)
    }

    private let waiters = Mutex<(open: Bool, calls: [UInt64: Waiter])>((true, [:]))

    /// Returns false when the connection has already closed.
    func insert(_ id: UInt64, _ waiter: Waiter) -> Bool {
        waiters.withLock { state in
            guard state.open else { return false }
            state.calls[id] = waiter
            return true
        }
    }

    func remove(_ id: UInt64) -> Waiter? {
        waiters.withLock { $0.calls.removeValue(forKey: id) }
    }

    /// Routes one frame from the server to its call.
    func deliver(_ envelope: Envelope) {
        let id = envelope.callId
        switch envelope.kind {
        case .streamMessage:
            guard case .stream(let continuation, _) = waiters.withLock({ $0.calls[id] }) else { return }
            continuation.yield(envelope.payload)
        case .response, .streamEnd:
            guard let waiter = remove(id) else { return }
            switch waiter {
            case .unary(let promise, let timer):
                timer?.cancel()
                promise.succeed(envelope)
            case .stream(let continuation, let timer):
                timer?.cancel()
                if let status = envelope.status, status.code != .ok {
                    continuation.finish(throwing: RPCError.answered(status, metadata: RPCMetadata(envelope.metadata)))
                } else {
                    continuation.finish()
                }
            }
        default:
            break
        }
    }

    func failAll(_ error: RPCError) {
        let calls = waiters.withLock { state in
            state.open = false
            defer { state.calls = [:] }
            return state.calls
        }
        for waiter in calls.values {
            waiter.fail(error)
        }
    }
}

extension PendingCalls.Waiter {
    func fail(_ error: RPCError) {
        switch self {
        case .unary(let promise, let timer):
            timer?.cancel()
            promise.fail(error)
        case .stream(let continuation, let timer):
            timer?.cancel()
            continuation.finish(throwing: error)
        }
    }
}

/// Hands each frame from the server to the call waiting for it.
final class CallDispatcher: ChannelInboundHandler, Sendable {
    typealias InboundIn = InboundFrame

    let calls = PendingCalls()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .envelope(let envelope):
            calls.deliver(envelope)
        case .undecodable:
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        calls.failAll(RPCError(.unavailable, "connection to the server closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A TLS failure ends every call with what went wrong, not "I/O on closed channel".
        if error is NIOSSLError || error is BoringSSLError {
            calls.failAll(RPCError(.unavailable, TLSFailure.describe(error)))
        }
        context.close(promise: nil)
    }
}

/// One multiplexed connection of an ``RPCClient``.
final class ClientConnection: Sendable {
    let channel: any Channel
    private let calls: PendingCalls
    private let nextCallID = Atomic<UInt64>(1)

    init(channel: any Channel, calls: PendingCalls) {
        self.channel = channel
        self.calls = calls
    }

    func unary(_ request: Envelope, timeout: Duration) async throws -> Envelope {
        let method = request.method
        // Not sent at all when the caller has already given up.
        if Task.isCancelled { throw RPCError(.cancelled, "\(method) was cancelled by the caller") }
        let (id, answer) = send(request, timeout: timeout)
        return try await withTaskCancellationHandler {
            try await answer.get()
        } onCancel: {
            abandon(id, RPCError(.cancelled, "\(method) was cancelled by the caller"))
        }
    }

    /// Sends a unary call; the future completes with the answer, or fails when the
    /// deadline passes or the connection closes first.
    func send(_ request: Envelope, timeout: Duration) -> (UInt64, EventLoopFuture<Envelope>) {
        let id = nextCallID.add(1, ordering: .relaxed).oldValue
        let method = request.method
        var request = request
        request.callId = id
        let promise = channel.eventLoop.makePromise(of: Envelope.self)
        let timer = scheduleTimeout(id, method, timeout)
        guard calls.insert(id, .unary(promise, timer)) else {
            timer.cancel()
            promise.fail(RPCError(.unavailable, "connection to the server closed"))
            return (id, promise.futureResult)
        }
        channel.writeAndFlush(request).whenFailure { [calls] error in
            calls.remove(id)?.fail(RPCError(.unavailable, "cannot send \(method): \(error)"))
        }
        return (id, promise.futureResult)
    }

    func stream(_ request: Envelope, timeout: Duration) -> AsyncThrowingStream<[UInt8], any Error> {
        let id = nextCallID.add(1, ordering: .relaxed).oldValue
        let method = request.method
        var request = request
        request.callId = id
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let timer = scheduleTimeout(id, method, timeout)
        guard calls.insert(id, .stream(continuation, timer)) else {
            timer.cancel()
            continuation.finish(throwing: RPCError(.unavailable, "connection to the server closed"))
            return stream
        }
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination {
                self?.abandon(id, RPCError(.cancelled, "\(method) was cancelled by the caller"))
            }
        }
        channel.writeAndFlush(request).whenFailure { [calls] error in
            calls.remove(id)?.fail(RPCError(.unavailable, "cannot send \(method): \(error)"))
        }
        return stream
    }

    private func scheduleTimeout(_ id: UInt64, _ method: String, _ timeout: Duration) -> Scheduled<Void> {
        channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [weak self] in
            self?.abandon(id, RPCError(.deadlineExceeded, "\(method) did not answer within \(timeout)"))
        }
    }

    /// Stops waiting for a call and tells the server to stop working on it.
    private func abandon(_ id: UInt64, _ error: RPCError) {
        guard let waiter = calls.remove(id) else { return }
        waiter.fail(error)
        channel.writeAndFlush(Envelope(callId: id, kind: .cancel), promise: nil)
    }
}

enum TLSFailure {
    /// The handshake's failure as a person can act on it.
    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "the server's TLS certificate was not trusted: give the CA that signed it (licensectl --ca) (\(text))"
        }
        if text.contains("WRONG_VERSION_NUMBER") {
            return "the server did not answer with TLS: is this a plaintext listener? (\(text))"
        }
        return "the TLS handshake with the server failed: \(text)"
    }
}
