import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging

/// The gateway's admission, run by the server before every call and after its answer.
/// It lets a call in or refuses it, in this order: the caller's failed-authentication
/// limit, the API key (UNAUTHENTICATED), the role's permission (PERMISSION_DENIED), the
/// credential's and the license key's rate limits (RESOURCE_EXHAUSTED with `retry-after`).
/// Admitted calls carry the credential's tenant, id and role, and nothing the caller set
/// under `x-lm-`. One access-log line per call. `Health/Check` is open: load balancers
/// call it without a key, and it reveals only that the gateway runs.
struct GatewayAdmission: ServerInterceptor {
    let gateway: GatewayService

    func admit(_ call: inout ServerCall) throws(RPCError) {
        // What the caller set under x-lm- never reaches a service or the access log.
        var metadata = call.metadata
        metadata.removeAll(prefixed: RPCMetadata.gatewayPrefix)
        call = call.with(metadata: metadata)
        guard call.method != HealthMethods.check.name else { return }
        let source = try gateway.failedAuthSource(call)
        if let secret = call.metadata[RPCMetadata.apiKey], secret.hasPrefix("lmh_") {
            let scope = try gateway.authenticateHolder(secret, call, source: source)
            call = gateway.forwarded(call, scope, source: source)
            if let refusal = Permissions.holderRefusal(call.method) { throw refusal }
            if let wait = gateway.holderBuckets.take(scope.actor) { throw GatewayService.exhausted("this sign-in is over its rate limit", wait) }
            return
        }
        let key = try gateway.authenticate(call, source: source)
        call = gateway.forwarded(call, key, source: source)
        if let refusal = Permissions.refusal(key, call.method) { throw refusal }
        try gateway.checkRateLimits(call, key)
    }

    func finished(_ call: ServerCall, code: StatusCode, after elapsed: Duration) {
        guard call.method != HealthMethods.check.name else { return }
        gateway.accessLog(call, code, elapsed)
    }
}

/// The credential an admitted call was made with, as admission stated it in the metadata.
struct Caller: Sendable {
    let id: String
    let tenantId: String
    let role: Role
    /// For a holder token: the license, or the customer, it reaches.
    let holderLicense: String
    let holderCustomer: String

    init(_ call: ServerCall) throws(RPCError) {
        guard let id = call.metadata[RPCMetadata.actor], let tenant = call.metadata[RPCMetadata.tenant],
            let role = Role.allKnown.first(where: { $0.description == call.metadata[RPCMetadata.role] })
        else { throw RPCError(.unauthenticated, "the call was not admitted by the gateway") }
        self.id = id
        self.tenantId = tenant
        self.role = role
        self.holderLicense = call.metadata[RPCMetadata.holderLicense] ?? ""
        self.holderCustomer = call.metadata[RPCMetadata.holderCustomer] ?? ""
    }
}

extension GatewayService {
    /// Whom failed sign-ins count against: the person behind the console when the console's
    /// own credential vouches for their address, else the caller's address or process.
    func failedAuthSource(_ call: ServerCall) throws(RPCError) -> String {
        // An admitted call carries what admission worked out (the console key is gone by then).
        if let admitted = call.metadata[RPCMetadata.authSource] { return admitted }
        guard let consoleSecret = call.metadata[RPCMetadata.consoleKey] else { return call.peer }
        guard let console = credentials.authenticate(consoleSecret, now: clock.now), console.role == .console else {
            _ = failedAuthBuckets.take(call.peer)
            throw RPCError(.unauthenticated, "the console credential (\(RPCMetadata.consoleKey)) is unknown, expired, revoked or not a CONSOLE key")
        }
        guard let address = call.metadata[RPCMetadata.endUserAddress], !address.isEmpty, address.utf8.count <= 64 else {
            return "console:\(console.id)"
        }
        return "end-user:\(address)"
    }

    /// Refuses a source over its failed sign-in limit.
    /// A local caller's user, unless a person behind the console is the source.
    private func localUser(_ source: String, _ call: ServerCall) -> String? {
        source.hasPrefix("end-user:") || source.hasPrefix("console:") ? nil : call.localUser
    }

    func checkFailedAuth(_ source: String, _ call: ServerCall) throws(RPCError) {
        let localUser = localUser(source, call)
        if failedAuthBuckets.isEmpty(source) || localUser.map(failedAuthUserBuckets.isEmpty) == true {
            let who = source.hasPrefix("end-user:") ? "you" : localUser == nil ? "this address" : "this process or user"
            throw RPCError(.resourceExhausted, "too many failed authentications from \(who); wait and try again",
                           metadata: [RPCMetadata.retryAfter: "\(Int(ceil(1 / failedAuthBuckets.rate)))"])
        }
    }

    /// Counts a failed sign-in against its source.
    func failedAuth(_ source: String, _ call: ServerCall, _ message: String) -> RPCError {
        _ = failedAuthBuckets.take(source)
        if let localUser = localUser(source, call) { _ = failedAuthUserBuckets.take(localUser) }
        return RPCError(.unauthenticated, message)
    }

    func authenticateHolder(_ token: String, _ call: ServerCall, source: String) throws(RPCError) -> HolderScope {
        try checkFailedAuth(source, call)
        guard let scope = holderTokens.scope(of: token, now: clock.now) else {
            throw failedAuth(source, call, "the sign-in has expired or is not valid: sign in again")
        }
        return scope
    }

    func authenticate(_ call: ServerCall, source: String) throws(RPCError) -> ApiKey {
        try checkFailedAuth(source, call)
        func failed(_ message: String) -> RPCError { failedAuth(source, call, message) }
        guard let secret = call.metadata[RPCMetadata.apiKey], !secret.isEmpty else {
            throw failed("no API key: send one in the '\(RPCMetadata.apiKey)' metadata")
        }
        guard let key = credentials.authenticate(secret.hasPrefix("Bearer ") ? String(secret.dropFirst(7)) : secret, now: clock.now) else {
            throw failed("the API key is unknown, expired or revoked")
        }
        return key
    }

    func checkRateLimits(_ call: ServerCall, _ key: ApiKey) throws(RPCError) {
        if let buckets = roleBuckets[key.role], let wait = buckets.take(key.id) {
            throw Self.exhausted("credential \(key.id) is over its rate limit", wait)
        }
        switch call.method {
        case ValidationMethods.validate.name:
            if let license = try? ValidateRequest(serializedBytes: call.payload).licenseKey, let wait = validateBuckets.take(Self.normalized(license)) {
                throw Self.exhausted("too many validations of this license key", wait)
            }
        case ValidationMethods.activate.name:
            if let license = try? ActivateRequest(serializedBytes: call.payload).licenseKey, let wait = activateBuckets.take(Self.normalized(license)) {
                throw Self.exhausted("too many activations of this license key", wait)
            }
        default:
            break
        }
    }

    static func exhausted(_ message: String, _ wait: Double) -> RPCError {
        RPCError(.resourceExhausted, "\(message); retry after \(Int(ceil(wait))) s", metadata: [RPCMetadata.retryAfter: "\(Int(ceil(wait)))"])
    }

    /// The same key typed differently counts as one; a key that does not parse counts by its text.
    private static func normalized(_ key: String) -> LicenseKeyIdentity {
        if let parsed = try? LicenseKey(parsing: key) { return LicenseKeyIdentity(key: parsed.bits) }
        if let imported = try? ImportedKey(parsing: key) { return LicenseKeyIdentity(text: "imported:" + imported.normalized) }
        return LicenseKeyIdentity(text: key)
    }

    /// The call as the services see it: the identity the gateway vouches for (admission has
    /// already removed what the caller set under `x-lm-`).
    func forwarded(_ call: ServerCall, _ key: ApiKey, source: String? = nil) -> ServerCall {
        var metadata = call.metadata
        if let source, source != call.peer { metadata[RPCMetadata.authSource] = source }
        metadata[RPCMetadata.apiKey] = nil
        metadata[RPCMetadata.consoleKey] = nil
        metadata[RPCMetadata.tenant] = key.tenantId
        metadata[RPCMetadata.actor] = key.id
        metadata[RPCMetadata.role] = key.role.description
        return call.with(metadata: metadata)
    }

    /// A holder's call: the tenant and scope of the token, nothing the caller set.
    func forwarded(_ call: ServerCall, _ scope: HolderScope, source: String) -> ServerCall {
        var metadata = call.metadata
        if source != call.peer { metadata[RPCMetadata.authSource] = source }
        metadata[RPCMetadata.apiKey] = nil
        metadata[RPCMetadata.consoleKey] = nil
        metadata[RPCMetadata.tenant] = scope.tenant
        metadata[RPCMetadata.actor] = scope.actor
        metadata[RPCMetadata.role] = Role.holder.description
        metadata[RPCMetadata.holderLicense] = scope.licenseID
        metadata[RPCMetadata.holderCustomer] = scope.customerID
        return call.with(metadata: metadata)
    }

    /// Method, role, tenant, status, duration: never keys or personal data.
    func accessLog(_ call: ServerCall, _ code: StatusCode, _ elapsed: Duration) {
        logger.info("call", metadata: [
            "method": "\(call.method)",
            "role": "\(call.metadata[RPCMetadata.role] ?? "-")",
            "tenant": "\(call.metadata[RPCMetadata.tenant] ?? "-")",
            "credential": "\(call.metadata[RPCMetadata.actor] ?? "-")",
            "status": "\(code)",
            "duration_ms": "\(Double(elapsed.components.attoseconds / 1_000_000_000_000) / 1000 + Double(elapsed.components.seconds) * 1000)",
        ])
    }
}
