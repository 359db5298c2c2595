@_exported import LicensingFraming
@_exported import LicensingRPCCore
import NIOCore

// What the socket transport adds to the transport-agnostic core.

extension ServerCall {
    /// The event loop of the caller's connection: calls this one makes prefer connections
    /// on the same loop, so the answer needs no hop between threads. Nil in-process.
    public var eventLoop: (any EventLoop)? { transportSpecific as? any EventLoop }
}

/// A forwarded call's future answers an immediate handler with no task in between.
extension EventLoopFuture: PendingAnswer where Value == [UInt8] {}
