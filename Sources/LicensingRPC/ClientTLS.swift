#if canImport(Glibc)
import Glibc
#endif
import LicensingWire
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// Completes when the TLS handshake does: with the channel's readiness, or with what failed.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = Any
    let promise: EventLoopPromise<Void>
    private let done = Mutex(false)

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    /// Completes the promise once; later outcomes are the connection's, not the handshake's.
    private func complete(_ result: Result<Void, RPCError>) {
        guard done.withLock({ done in defer { done = true }; return !done }) else { return }
        promise.completeWith(result.mapError { $0 as any Error })
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { complete(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(RPCError(.unavailable, TLSFailure.describe(error))))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(RPCError(.unavailable, "the server closed the connection during the TLS handshake")))
        context.fireChannelInactive()
    }

    /// A connection that never became active (refused, timed out) is torn down without
    /// `channelInactive`: the promise still gets its answer.
    func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(RPCError(.unavailable, "the connection closed before the TLS handshake finished")))
    }
}
