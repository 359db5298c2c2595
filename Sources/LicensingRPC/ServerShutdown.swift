#if canImport(Glibc)
import Synchronization
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

extension EventLoop {
    /// Runs `body` now when already on this loop, else on it soon.
    func onLoop(_ body: @escaping @Sendable () -> Void) {
        if inEventLoop { body() } else { execute(body) }
    }
}

/// Completes once, however many times it is signalled.
final class StopSignal: Sendable {
    private let promise: EventLoopPromise<Void>
    private let signalled = Mutex(false)

    init(_ eventLoop: any EventLoop) {
        promise = eventLoop.makePromise()
    }

    func signal() {
        let first = signalled.withLock { signalled in
            defer { signalled = true }
            return !signalled
        }
        if first { promise.succeed(()) }
    }

    func wait() async {
        try? await promise.futureResult.get()
    }
}

/// The server's open connections, so that stopping can drain each and wait for it.
final class OpenConnections: Sendable {
    private let state = Mutex<(stopping: Bool, open: [ObjectIdentifier: (any Channel, NIOLoopBound<RPCConnectionHandler>)])>((false, [:]))
    private let gauge = Meter(label: "rpc_server_open_connections")

    func opened(_ channel: any Channel, handler: NIOLoopBound<RPCConnectionHandler>) {
        let id = ObjectIdentifier(channel)
        let stopping = state.withLock { state in
            if !state.stopping { state.open[id] = (channel, handler) }
            return state.stopping
        }
        if stopping {
            channel.close(promise: nil)
            return
        }
        gauge.increment()
        channel.closeFuture.whenComplete { _ in
            _ = self.state.withLock { $0.open.removeValue(forKey: id) }
            self.gauge.decrement()
        }
    }

    /// Drains every connection and returns when all have closed. A connection still open
    /// after `limit` (a handler that does not return, a peer that reads nothing) is closed.
    func drainAll(within limit: Duration) async {
        let open = state.withLock { state in
            state.stopping = true
            return Array(state.open.values)
        }
        for (channel, handler) in open {
            channel.eventLoop.execute { handler.value.drain() }
            let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(limit)) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { _ in deadline.cancel() }
        }
        for (channel, _) in open {
            try? await channel.closeFuture.get()
        }
    }
}
