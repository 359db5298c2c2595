import LicensingWire

/// A failed call: a canonical status code and a message the caller can act on.
public struct RPCError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    /// Sent with the status, e.g. `retry-after` on RESOURCE_EXHAUSTED.
    public var metadata: RPCMetadata
    /// The server answered with this status (it is up, and said so), rather than the call
    /// failing on the way (no connection, closed, TLS). Not part of equality.
    public var fromPeer = false

    public init(_ code: StatusCode, _ message: String, metadata: RPCMetadata = [:]) {
        self.code = code
        self.message = message
        self.metadata = metadata
    }

    public init(status: Status, metadata: RPCMetadata = [:]) {
        self.init(status.code, status.message, metadata: metadata)
    }

    public var status: Status { Status(code: code, message: message) }

    public static func == (lhs: RPCError, rhs: RPCError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.metadata == rhs.metadata
    }

    /// A status a server answered with.
    public static func answered(_ status: Status, metadata: RPCMetadata) -> RPCError {
        var error = RPCError(status: status, metadata: metadata)
        error.fromPeer = true
        return error
    }

    public var description: String { "\(code): \(message)" }

    public static func invalidArgument(_ message: String) -> RPCError { .init(.invalidArgument, message) }
    public static func notFound(_ message: String) -> RPCError { .init(.notFound, message) }
    public static func failedPrecondition(_ message: String) -> RPCError { .init(.failedPrecondition, message) }
    public static func alreadyExists(_ message: String) -> RPCError { .init(.alreadyExists, message) }
    public static func unavailable(_ message: String) -> RPCError { .init(.unavailable, message) }
    public static func unimplemented(_ method: String) -> RPCError {
        .init(.unimplemented, "method \(quoted(method)) is not implemented by this service")
    }

    /// Longest status message sent: what a caller sent is echoed only in part.
    public static let maximumMessageBytes = 1024

    /// Caller-supplied text as an error may echo it: at most `limit` characters.
    public static func quoted(_ text: String, limit: Int = 80) -> String {
        guard text.utf8.count > limit else { return text }
        return "\(text.prefix(limit))… (\(text.utf8.count) bytes)"
    }

    /// The status as sent: a message cut to ``maximumMessageBytes``.
    package var boundedStatus: Status {
        guard message.utf8.count > Self.maximumMessageBytes else { return status }
        return Status(code: code, message: Self.quoted(message, limit: Self.maximumMessageBytes / 4))
    }
}

/// An error from below the RPC layer that knows the status a caller should get, such as a
/// full disk (RESOURCE_EXHAUSTED) rather than an opaque INTERNAL. The server logs the
/// error itself and answers with `rpcError(method:)`.
public protocol RPCStatusConvertible: Error {
    /// The status for the caller, or nil when the error is internal after all.
    func rpcError(method: String) -> RPCError?
}

