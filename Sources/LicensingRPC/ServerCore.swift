#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LicensingWire
import Logging
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// What every connection of a server shares.
final class ServerCore: Sendable {
    let router: RPCRouter
    let limits: FrameLimits
    let defaultTimeout: Duration
    let logger: Logger
    let metrics: RPCServerMetrics
    /// Calls one connection may have in flight; beyond it the server stops reading from
    /// that connection until some finish.
    let maxCallsPerConnection = 1024

    init(router: RPCRouter, limits: FrameLimits, defaultTimeout: Duration, logger: Logger) {
        self.router = router
        self.metrics = RPCServerMetrics(methods: router.registeredMethods)
        self.limits = limits
        self.defaultTimeout = defaultTimeout
        self.logger = logger
    }

    func reply(_ callID: UInt64, _ kind: FrameKind, _ error: RPCError?) -> Envelope {
        var envelope = Envelope(callId: callID, kind: kind, status: error?.boundedStatus ?? Status(code: .ok))
        if let error { envelope.metadata = error.metadata.entries }
        return envelope
    }

    func status(for error: any Error, method: String) -> RPCError {
        CallStatus.of(error, method: method, logger: logger)
    }

    /// An answer too large for a frame would make the peer drop the whole connection,
    /// failing every call on it; it fails only its own call instead.
    func oversized(_ envelope: Envelope, method: String) -> RPCError? {
        let limit = limits.maxFrameLength
        // An answer's envelope adds a few dozen bytes to its payload: measure only near the limit.
        guard envelope.payload.count > limit - 64, envelope.serializedSize > limit else { return nil }
        return RPCError(.resourceExhausted, "an answer of \(method) (\(envelope.payload.count) bytes) exceeds the frame limit of \(limit) bytes")
    }
}
