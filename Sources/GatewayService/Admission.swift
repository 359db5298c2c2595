import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging

extension GatewayService {
    /// Lets a call in or refuses it, in this order: the source's failed-authentication
    /// limit, the API key (UNAUTHENTICATED), the role's permission (PERMISSION_DENIED), the
    /// credential's and the license key's rate limits (RESOURCE_EXHAUSTED with
    /// `retry-after`). Admitted calls carry the credential's tenant, id and role, and
    /// nothing the caller set under `x-lm-`. One access-log line per call.
    func guarded<T: Sendable>(_ call: ServerCall, _ body: (ServerCall, ApiKey) async throws -> T) async throws -> T {
        let started = ContinuousClock.now
        let (admitted, key) = try admit(call, started: started)
        do {
            let result = try await body(admitted, key)
            accessLog(call, key, .ok, started)
            return result
        } catch {
            accessLog(call, key, (error as? RPCError)?.code ?? .internal, started)
            throw error
        }
    }

    /// Forwards a unary call without a task: admission runs in memory on the event loop
    /// and the backend's answer completes a future on the same loop.
    func forwardedNow(_ call: ServerCall, to backend: Backend) throws -> ImmediateReply {
        let started = ContinuousClock.now
        let (admitted, key) = try admit(call, started: started)
        let answer = backend.callRawFuture(admitted)
        answer.whenComplete { result in
            switch result {
            case .success: self.accessLog(call, key, .ok, started)
            case .failure(let error): self.accessLog(call, key, (error as? RPCError)?.code ?? .internal, started)
            }
        }
        return .future(answer)
    }

    /// Admission alone: the call as the services will see it, and who makes it. A refusal
    /// is logged here.
    private func admit(_ call: ServerCall, started: ContinuousClock.Instant) throws(RPCError) -> (ServerCall, ApiKey) {
        var identity: ApiKey?
        do throws(RPCError) {
            let key = try authenticate(call)
            identity = key
            if let refusal = Permissions.refusal(key, call.method) { throw refusal }
            try checkRateLimits(call, key)
            return (forwarded(call, key), key)
        } catch {
            accessLog(call, identity, error.code, started)
            throw error
        }
    }

    private func authenticate(_ call: ServerCall) throws(RPCError) -> ApiKey {
        let localUser = call.localUser
        if failedAuthBuckets.isEmpty(call.peer) || localUser.map(failedAuthUserBuckets.isEmpty) == true {
            let source = localUser == nil ? "this address" : "this process or user"
            throw RPCError(.resourceExhausted, "too many failed authentications from \(source); wait and try again",
                           metadata: [RPCMetadata.retryAfter: "\(Int(ceil(1 / failedAuthBuckets.rate)))"])
        }
        func failed(_ message: String) -> RPCError {
            _ = failedAuthBuckets.take(call.peer)
            if let localUser { _ = failedAuthUserBuckets.take(localUser) }
            return RPCError(.unauthenticated, message)
        }
        guard let secret = call.metadata[RPCMetadata.apiKey], !secret.isEmpty else {
            throw failed("no API key: send one in the '\(RPCMetadata.apiKey)' metadata")
        }
        guard let key = credentials.authenticate(secret.hasPrefix("Bearer ") ? String(secret.dropFirst(7)) : secret, now: clock.now) else {
            throw failed("the API key is unknown, expired or revoked")
        }
        return key
    }

    private func checkRateLimits(_ call: ServerCall, _ key: ApiKey) throws(RPCError) {
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

    private static func exhausted(_ message: String, _ wait: Double) -> RPCError {
        RPCError(.resourceExhausted, "\(message); retry after \(Int(ceil(wait))) s", metadata: [RPCMetadata.retryAfter: "\(Int(ceil(wait)))"])
    }

    /// The same key typed differently counts as one; a key that does not parse counts by its text.
    private static func normalized(_ key: String) -> LicenseKeyIdentity {
        if let parsed = try? LicenseKey(parsing: key) { return LicenseKeyIdentity(key: parsed.bits) }
        return LicenseKeyIdentity(text: key)
    }

    /// The call as the services see it: the identity the gateway vouches for.
    private func forwarded(_ call: ServerCall, _ key: ApiKey) -> ServerCall {
        var metadata = call.metadata
        metadata.removeAll(prefixed: RPCMetadata.gatewayPrefix)
        metadata[RPCMetadata.apiKey] = nil
        metadata[RPCMetadata.tenant] = key.tenantId
        metadata[RPCMetadata.actor] = key.id
        metadata[RPCMetadata.role] = key.role.description
        return ServerCall(method: call.method, payload: call.payload, metadata: metadata, deadline: call.deadline, logger: call.serverLogger, peer: call.peer, localUser: call.localUser, eventLoop: call.eventLoop)
    }

    /// Method, role, tenant, status, duration: never keys or personal data.
    private func accessLog(_ call: ServerCall, _ key: ApiKey?, _ code: StatusCode, _ started: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - started
        logger.info("call", metadata: [
            "method": "\(call.method)",
            "role": "\(key?.role.description ?? "-")",
            "tenant": "\(key?.tenantId ?? "-")",
            "credential": "\(key?.id ?? "-")",
            "status": "\(code)",
            "duration_ms": "\(Double(elapsed.components.attoseconds / 1_000_000_000_000) / 1000 + Double(elapsed.components.seconds) * 1000)",
        ])
    }
}
