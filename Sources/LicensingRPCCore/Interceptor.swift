import LicensingWire

/// Runs around every call a server answers, before its handler and after its answer: the
/// gateway's admission (credentials, permissions, rate limits, access log) is one, and the
/// console and the integrations service can guard their calls with the same.
public protocol ServerInterceptor: Sendable {
    /// Lets the call through, possibly changed (the identity the services should see), or
    /// refuses it by throwing. What it set on `call` before refusing is kept for `finished`.
    func admit(_ call: inout ServerCall) throws(RPCError)

    /// Told how each call ended, with the call as admitted (or as refused).
    func finished(_ call: ServerCall, code: StatusCode, after elapsed: Duration)
}

extension ServerInterceptor {
    public func finished(_ call: ServerCall, code: StatusCode, after elapsed: Duration) {}
}
