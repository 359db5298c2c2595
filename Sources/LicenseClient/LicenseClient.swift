import Synchronization
import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

/// A client of the license manager's gateway for Swift products and backends.
///
/// Products validate (every answer signed by the server and verified against the public
/// keys the product ships with), activate machines, hold floating seats and report usage;
/// backends issue, renew, suspend and revoke licenses and record payments. One client is
/// safe to share between tasks; it keeps a few multiplexed connections to the gateway.
public final class LicenseClient: Sendable {
    public struct Configuration: Sendable {
        /// `unix:/path/gateway.sock` or `host:port` (TLS).
        public var endpoint: String
        public var apiKey: String
        /// The CA (PEM file) the gateway's certificate must chain to: the product pins it.
        public var caFile: String?
        /// kid → raw Ed25519 public key: the keys a signed answer must be made with.
        public var publicKeys: [String: [UInt8]]
        /// Per-call deadline.
        public var timeout: Duration = .seconds(10)
        /// How long the last verified answer is honoured while the gateway cannot be
        /// reached (0: not at all).
        public var offlineGraceSeconds: Int64 = 0
        /// How far the server's clock may be from ours.
        public var maxClockSkewSeconds: Int64 = 300

        public init(endpoint: String, apiKey: String, caFile: String? = nil, publicKeys: [String: [UInt8]] = [:]) {
            self.endpoint = endpoint
            self.apiKey = apiKey
            self.caFile = caFile
            self.publicKeys = publicKeys
        }
    }

    let configuration: Configuration
    let rpc: RPCClient
    let clock: any LicenseClock
    /// The last verified answer per (key, fingerprint, feature), for the offline grace.
    private let lastVerified = Mutex<[String: (ValidationStatement, Int64)]>([:])

    /// `clock`: the time offline grace and clock checks use (tests inject one).
    public init(_ configuration: Configuration, clock: any LicenseClock = SystemLicenseClock()) throws {
        self.configuration = configuration
        self.clock = clock
        let endpoint = try Endpoint(parsing: configuration.endpoint)
        var rpcConfiguration = RPCClientConfiguration(connections: 2, defaultTimeout: configuration.timeout, metadata: [RPCMetadata.apiKey: configuration.apiKey])
        if case .tcp = endpoint {
            guard let ca = configuration.caFile else {
                throw LicenseClientError(.invalidArgument, "a TCP gateway needs caFile: the CA its certificate must chain to")
            }
            rpcConfiguration.tls = try RPCTLS.client(ca: ca)
        }
        rpc = RPCClient(endpoint: endpoint, configuration: rpcConfiguration)
    }

    public func close() async {
        await rpc.close()
    }

    /// One call with the configured deadline; failures become `LicenseClientError`.
    func call<Request, Response>(_ method: WireMethod<Request, Response>, _ request: Request, idempotencyKey: String? = nil) async throws(LicenseClientError) -> Response {
        var metadata = RPCMetadata()
        metadata[RPCMetadata.idempotencyKey] = idempotencyKey
        do {
            return try await rpc.call(method, request, metadata: metadata, timeout: configuration.timeout)
        } catch let error as RPCError {
            throw LicenseClientError(error)
        } catch {
            throw LicenseClientError(.unavailable, "\(error)")
        }
    }

    // MARK: Validation

    /// A validation's outcome, as the signed statement says it.
    public struct Validation: Sendable, Equatable {
        public let reason: ReasonCode
        public let valid: Bool
        public let licenseID: String
        public let expiresAt: Int64
        public let graceEndsAt: Int64
        public let features: [String]
        public let serverTime: Int64
        /// Set when the gateway could not be reached and the last verified answer (made
        /// at this time) is honoured under the offline grace.
        public let offlineSince: Int64?
    }

    /// Validates with a fresh nonce and verifies the signed answer: its signature by one
    /// of the pinned keys, the nonce (a replayed answer fails), the server's time, and that
    /// the answer's fields are the signed ones. When the gateway cannot be reached, the
    /// last verified answer for the same key, machine and feature is honoured for the
    /// configured offline grace, and `offlineSince` says so.
    public func validate(key: String, fingerprint: String = "", feature: String = "") async throws(LicenseClientError) -> Validation {
        var generator = SystemRandomNumberGenerator()
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let graceKey = "\(key)\u{0}\(fingerprint)\u{0}\(feature)"
        let response: ValidateResponse
        do {
            response = try await call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: fingerprint, feature: feature, nonce: nonce))
        } catch where error.code == .unavailable || error.code == .deadlineExceeded {
            return try offline(graceKey, after: error)
        }
        let statement = try verify(response, nonce: nonce)
        let validation = Validation(
            reason: statement.reason, valid: statement.reason == .valid || statement.reason == .inGrace, licenseID: statement.licenseId,
            expiresAt: statement.expiresAt, graceEndsAt: statement.graceEndsAt, features: statement.features, serverTime: statement.serverTime, offlineSince: nil)
        if validation.valid {
            lastVerified.withLock { $0[graceKey] = (statement, clock.now) }
        } else {
            _ = lastVerified.withLock { $0.removeValue(forKey: graceKey) }
        }
        return validation
    }

    /// The checks a signed answer must pass.
    func verify(_ response: ValidateResponse, nonce: [UInt8]) throws(LicenseClientError) -> ValidationStatement {
        do {
            return try ValidationAnswer.verify(
                response, nonce: nonce, publicKeys: configuration.publicKeys, now: clock.now, maxSkew: configuration.maxClockSkewSeconds)
        } catch {
            throw LicenseClientError(.unverified, "\(error)")
        }
    }

    private func offline(_ graceKey: String, after error: LicenseClientError) throws(LicenseClientError) -> Validation {
        let now = clock.now
        guard configuration.offlineGraceSeconds > 0, let (statement, at) = lastVerified.withLock({ $0[graceKey] }) else { throw error }
        guard now - at <= configuration.offlineGraceSeconds else {
            throw LicenseClientError(
                .unavailable,
                "the gateway cannot be reached and the offline grace ended at \(ISODate.format(at + configuration.offlineGraceSeconds)) (\(error.message))")
        }
        let expired = statement.expiresAt != 0 && (statement.graceEndsAt != 0 ? statement.graceEndsAt : statement.expiresAt) <= now
        return Validation(
            reason: expired ? .expired : statement.reason, valid: !expired, licenseID: statement.licenseId, expiresAt: statement.expiresAt,
            graceEndsAt: statement.graceEndsAt, features: statement.features, serverTime: statement.serverTime, offlineSince: at)
    }

    // MARK: Machines, files

    public func activate(key: String, fingerprint: String, machineName: String = "", platform: String = "") async throws(LicenseClientError) -> ActivateResponse {
        try await call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: fingerprint, machineName: machineName, platform: platform))
    }

    /// Safe to retry: a machine already freed answers `deactivated == false`.
    public func deactivate(key: String, fingerprint: String) async throws(LicenseClientError) -> Bool {
        try await call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: fingerprint)).deactivated
    }

    /// An offline license file for this machine, for use where the product cannot call home.
    public func offlineFile(key: String, fingerprint: String, validSeconds: Int64 = 0) async throws(LicenseClientError) -> String {
        try await call(ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(licenseKey: key, fingerprint: fingerprint, validSeconds: validSeconds)).armored
    }

    /// Verifies an offline license file against the pinned keys, this machine and the
    /// clock (a clock set back before `lastSeen` is refused); store the returned
    /// `lastSeen` for the next check.
    public func verifyOfflineFile(_ file: String, key: String, fingerprint: String, lastSeen: Int64) throws(LicenseClientError) -> (payload: CertificatePayload, lastSeen: Int64) {
        do {
            return try OfflineLicenseFile.verify(
                file, licenseKey: try? LicenseKey(parsing: key), publicKeys: configuration.publicKeys, fingerprint: fingerprint, now: clock.now, lastSeen: lastSeen)
        } catch {
            throw LicenseClientError(.unverified, "\(error)")
        }
    }

    // MARK: Seats and usage

    /// Takes a floating seat, kept by a background heartbeat until `checkin()`.
    public func checkoutSeat(key: String, clientID: String, user: String = "", ttlSeconds: Int64 = 0) async throws(LicenseClientError) -> Seat {
        let answer = try await call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: clientID, user: user, ttlSeconds: ttlSeconds))
        guard answer.reason == .valid, let lease = answer.lease else {
            throw LicenseClientError(.failedPrecondition, "no seat: \(answer.reason) \(answer.detail)")
        }
        return Seat(client: self, key: key, lease: lease)
    }

    /// Buffers usage events and sends them in batches (each event once, by its id).
    public func usageRecorder(key: String, maxBatch: Int = 500) -> UsageRecorder {
        UsageRecorder(client: self, key: key, maxBatch: maxBatch)
    }

    // MARK: Issuers (backends)

    public func issueLicense(policyID: String, customerID: String, overrides: LicenseOverrides? = nil, idempotencyKey: String? = nil) async throws(LicenseClientError) -> IssueLicenseResponse {
        try await call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policyID, customerId: customerID, overrides: overrides), idempotencyKey: idempotencyKey)
    }

    public func renewLicense(id: String, extendTo: Int64 = 0, idempotencyKey: String? = nil) async throws(LicenseClientError) -> License {
        try await call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: id, extendTo: extendTo), idempotencyKey: idempotencyKey)
    }

    public func suspendLicense(id: String, reason: String) async throws(LicenseClientError) -> License {
        try await call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: id, reason: reason))
    }

    public func revokeLicense(id: String, reason: String) async throws(LicenseClientError) -> License {
        try await call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: id, reason: reason))
    }

    public func recordPayment(
        billingRef: String, periodStart: Int64, periodEnd: Int64, amountMinor: Int64, currency: String, paymentID: String
    ) async throws(LicenseClientError) -> Subscription {
        // The payment id makes a retry safe: recorded once.
        try await call(
            IssuanceMethods.recordPayment,
            RecordPaymentRequest(billingRef: billingRef, periodStart: periodStart, periodEnd: periodEnd, amountMinor: amountMinor, currency: currency, paymentId: paymentID),
            idempotencyKey: "payment:\(paymentID)")
    }

    /// The public key set, for a vendor to pin in its product's build.
    public func publicKeys() async throws(LicenseClientError) -> [String: [UInt8]] {
        let set = try await call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest())
        return Dictionary(set.keys.map { ($0.kid, $0.publicKey) }, uniquingKeysWith: { a, _ in a })
    }
}

/// What went wrong: the server's status code (or `unverified` for an answer that failed
/// its checks) and a message for a person.
public struct LicenseClientError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case invalidArgument, notFound, alreadyExists, permissionDenied, unauthenticated, resourceExhausted, failedPrecondition
        case unavailable, deadlineExceeded, internalError, unverified, other(StatusCode)
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: RPCError) {
        let code: Code = switch error.code {
        case .invalidArgument, .outOfRange: .invalidArgument
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .permissionDenied: .permissionDenied
        case .unauthenticated: .unauthenticated
        case .resourceExhausted: .resourceExhausted
        case .failedPrecondition: .failedPrecondition
        case .unavailable: .unavailable
        case .deadlineExceeded: .deadlineExceeded
        case .internal, .dataLoss, .unknown: .internalError
        default: .other(error.code)
        }
        self.init(code, error.message)
    }

    /// Whether trying again later can help (the call was not refused for what it asked).
    public var isRetryable: Bool { code == .unavailable || code == .deadlineExceeded || code == .resourceExhausted }

    public var description: String { "\(code): \(message)" }
}
