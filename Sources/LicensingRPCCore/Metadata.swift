import LicensingWire

/// Call metadata: credentials, idempotency key, trace id, and the identity the gateway
/// attaches. Keys are lower-case ASCII; a key may appear once.
public struct RPCMetadata: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var entries: [MetadataEntry]

    public init(_ entries: [MetadataEntry] = []) {
        self.entries = entries
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.entries = elements.map { MetadataEntry(key: $0.0, value: $0.1) }
    }

    public subscript(key: String) -> String? {
        get { entries.first { $0.key == key }?.value }
        set {
            entries.removeAll { $0.key == key }
            if let newValue { entries.append(MetadataEntry(key: key, value: newValue)) }
        }
    }

    /// Removes every key that starts with `prefix`: the gateway strips what only it may set.
    public mutating func removeAll(prefixed prefix: String) {
        entries.removeAll { $0.key.hasPrefix(prefix) }
    }
}

extension RPCMetadata {
    /// The caller's API key.
    public static let apiKey = "authorization"
    /// Makes a mutating call safe to retry.
    public static let idempotencyKey = "idempotency-key"
    public static let traceID = "trace-id"
    /// On RESOURCE_EXHAUSTED: whole seconds to wait before retrying.
    public static let retryAfter = "retry-after"
    /// Set by the gateway after authentication; a caller's own values are dropped.
    public static let tenant = "x-lm-tenant"
    public static let actor = "x-lm-actor"
    public static let role = "x-lm-role"
    public static let gatewayPrefix = "x-lm-"
    /// A holder token's scope, set by the gateway: one license, or one customer's licenses.
    public static let holderLicense = "x-lm-holder-license"
    public static let holderCustomer = "x-lm-holder-customer"
    /// license-console's own credential, beside the operator's or holder's `authorization`:
    /// with it the gateway trusts `end-user-address` as the person's address for its
    /// failed sign-in limits.
    public static let consoleKey = "console-key"
    public static let endUserAddress = "end-user-address"
    /// Set by the gateway's admission: whom failed sign-ins in the call count against.
    public static let authSource = "x-lm-auth-source"
}
