import Foundation
import LicenseClient
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The Swift client library against a live stack: an issuer issues, a product activates,
/// validates (the signed answer verified against the pinned keys), holds a seat past its
/// time to live, reports usage; the license is revoked and the next answer says so. Then
/// what a client must refuse: an answer signed by a key outside the pinned set, a forged
/// one, a replayed one; the gateway gone (offline grace honoured, then over); a TLS
/// gateway whose certificate the pinned CA did not sign; a deadline.
@Suite(.serialized) struct LicenseClientTests {
    static func client(_ stack: Stack, apiKey: String, publicKeys: [String: [UInt8]] = [:], clock: ManualLicenseClock? = nil, grace: Int64 = 0) throws -> LicenseClient {
        var configuration = LicenseClient.Configuration(endpoint: "unix:\(stack.folder)/run/gateway.sock", apiKey: apiKey, publicKeys: publicKeys)
        configuration.offlineGraceSeconds = grace
        configuration.timeout = .seconds(5)
        return try LicenseClient(configuration, clock: clock ?? ManualLicenseClock(Int64(Date().timeIntervalSince1970)))
    }

    @Test func theHappyPathAndWhatAClientMustRefuse() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        func key(_ role: Role) async throws -> String { try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "\(role)", role: role)).secret }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Floating", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 2, maxSeats: 1, features: ["render"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"))

        // The backend: issues with the issuer API; learns the public keys to pin.
        let issuer = try Self.client(stack, apiKey: try await key(.issuer))
        let issued = try await issuer.issueLicense(policyID: policy.id, customerID: customer.id, idempotencyKey: "order-1")
        let again = try await issuer.issueLicense(policyID: policy.id, customerID: customer.id, idempotencyKey: "order-1")
        #expect(again.license?.id == issued.license?.id, "an idempotent retry issues once")
        let pinned = try await issuer.publicKeys()
        #expect(!pinned.isEmpty)

        // The product.
        let clock = ManualLicenseClock(Int64(Date().timeIntervalSince1970))
        let productKey = try await key(.product)
        let client = try Self.client(stack, apiKey: productKey, publicKeys: pinned, clock: clock, grace: 3 * 86400)
        let activated = try await client.activate(key: issued.licenseKey, fingerprint: "fp-sdk-1", machineName: "Build box")
        #expect(activated.reason == .valid)
        let valid = try await client.validate(key: issued.licenseKey, fingerprint: "fp-sdk-1", feature: "render")
        #expect(valid.valid && valid.reason == .valid && valid.licenseID == issued.license?.id && valid.offlineSince == nil && valid.features == ["render"])

        // A seat kept by heartbeats past its 3-second lease; a second one is refused meanwhile.
        let seat = try await client.checkoutSeat(key: issued.licenseKey, clientID: "proc-1", ttlSeconds: 3)
        try await Task.sleep(for: .seconds(5))
        #expect(seat.problem == nil)
        let held = try await admin.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: issued.license!.id)).leases
        #expect(held.map(\.leaseId) == [seat.lease.leaseId], "the lease outlived its TTL by its heartbeats")
        await #expect(throws: LicenseClientError.self) { _ = try await client.checkoutSeat(key: issued.licenseKey, clientID: "proc-2") }
        try await seat.checkin()
        #expect(try await admin.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: issued.license!.id)).leases.isEmpty)

        // Usage in a batch, sent twice (a lost answer): counted once.
        let usage = client.usageRecorder(key: issued.licenseKey)
        for _ in 0..<3 { usage.record(feature: "render", quantity: 5) }
        #expect(try await usage.flush().accepted == 3 && usage.buffered == 0)
        let summary = try await admin.call(UsageMethods.getUsage, GetUsageRequest(licenseId: issued.license!.id, from: 0, to: Int64(Date().timeIntervalSince1970) + 86400))
        #expect(summary.features.first { $0.feature == "render" }?.quantity == 15)

        // Revoked: a verified answer says so once validation has the change (a revocation
        // reaches it within the feed interval; a grant at once).
        _ = try await issuer.revokeLicense(id: issued.license!.id, reason: "refund")
        #expect(await eventually(within: .seconds(10), every: .milliseconds(100)) {
            (try? await client.validate(key: issued.licenseKey, fingerprint: "fp-sdk-1", feature: "render"))?.reason == .revoked
        })

        // A client that pins another key set refuses the genuine answer.
        let stranger = try Self.client(stack, apiKey: productKey, publicKeys: ["kid-other": CertificateSigningKey.generate().publicKey], clock: clock)
        do throws(LicenseClientError) {
            _ = try await stranger.validate(key: issued.licenseKey)
            Issue.record("an answer signed outside the pinned set was accepted")
        } catch {
            #expect(error.code == .unverified && error.message.contains("not in the public key set"), "\(error)")
        }

        // Offline grace: a second license validated, then the gateway stops.
        let other = try await issuer.issueLicense(policyID: policy.id, customerID: customer.id)
        _ = try await client.activate(key: other.licenseKey, fingerprint: "fp-sdk-1")
        #expect(try await client.validate(key: other.licenseKey, fingerprint: "fp-sdk-1").valid)
        await stack.stop("gateway")
        let offline = try await client.validate(key: other.licenseKey, fingerprint: "fp-sdk-1")
        #expect(offline.valid && offline.offlineSince == clock.now, "\(offline)")
        clock.advance(by: 3 * 86400 + 1)
        do throws(LicenseClientError) {
            _ = try await client.validate(key: other.licenseKey, fingerprint: "fp-sdk-1")
            Issue.record("the offline grace did not end")
        } catch {
            #expect(error.code == .unavailable && error.message.contains("offline grace ended"), "\(error)")
        }
        // Nothing verified before: no grace at all.
        await #expect(throws: LicenseClientError.self) { _ = try await client.validate(key: other.licenseKey, fingerprint: "fp-never-seen") }
        for client in [issuer, client, stranger] { await client.close() }
    }

    /// A stand-in gateway that answers Validate as a test says: forged, replayed, late.
    @Test func forgedReplayedAndLateAnswersAreRefused() async throws {
        let folder = TemporaryFolder()
        let signer = CertificateSigningKey.generate()
        let kid = CertificateSigningKey.kid(for: signer.publicKey)
        let mode = ManualMode()
        var router = RPCRouter()
        router.register(ValidationMethods.validate) { request, _ in
            let now = Int64(Date().timeIntervalSince1970)
            let nonce = mode.current == "replayed" ? Array(repeating: 7, count: 16) : request.nonce
            if mode.current == "slow" { try await Task.sleep(for: .seconds(5)) }
            let statement = ValidationStatement(version: 1, reason: .valid, licenseId: "lic_1", features: ["render"], serverTime: now, nonce: nonce)
            let bytes = statement.serializedBytes()
            var signature = signer.sign(bytes)
            if mode.current == "forged" { signature[0] ^= 1 }
            var response = ValidateResponse(reason: .valid, valid: true, licenseId: "lic_1", serverTime: now, kid: kid, signature: signature, statement: bytes)
            if mode.current == "altered" { response.licenseId = "lic_2" }
            return response
        }
        try await withServer(router, on: [.unix(path: "\(folder.path)/fake.sock")]) { endpoints in
            var configuration = LicenseClient.Configuration(endpoint: "unix:\(folder.path)/fake.sock", apiKey: "lmk_test", publicKeys: [kid: signer.publicKey])
            configuration.timeout = .seconds(1)
            let client = try LicenseClient(configuration)
            mode.set("genuine")
            #expect(try await client.validate(key: "any").valid)
            for (name, expected) in [("forged", "does not verify"), ("replayed", "replay"), ("altered", "differ from its signed statement")] {
                mode.set(name)
                do throws(LicenseClientError) {
                    _ = try await client.validate(key: "any")
                    Issue.record("a \(name) answer was accepted")
                } catch {
                    #expect(error.code == .unverified && error.message.contains(expected), "\(name): \(error)")
                }
            }
            mode.set("slow")
            do throws(LicenseClientError) {
                _ = try await client.validate(key: "any")
                Issue.record("no deadline")
            } catch {
                #expect(error.code == .deadlineExceeded, "\(error)")
            }
            await client.close()
        }
    }

    /// A TLS gateway whose certificate was not signed by the pinned CA is refused.
    @Test func aGatewayCertificateFromAnotherCAIsRefused() async throws {
        let folder = TemporaryFolder()
        for name in ["real", "other"] {
            let (status, output) = try await Stack.run(
                URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/make-certs").standardized.path,
                ["\(folder.path)/\(name)"], absolute: true)
            #expect(status == 0, "\(output)")
        }
        var router = RPCRouter()
        router.register(ValidationMethods.validate) { _, _ in ValidateResponse(reason: .valid, valid: true) }
        let tls = try RPCTLS.server(certificateChain: "\(folder.path)/real/server.pem", privateKey: "\(folder.path)/real/server.key")
        let server = RPCServer(router: router, configuration: RPCServerConfiguration(endpoints: [.tcp(host: "127.0.0.1", port: 0)], tls: tls), logger: .init(label: "fake"))
        let running = Task { try await server.run() }
        defer { running.cancel() }
        guard case .tcp(_, let port) = try await server.listeningEndpoints[0] else { Issue.record("no port"); return }
        var configuration = LicenseClient.Configuration(endpoint: "127.0.0.1:\(port)", apiKey: "lmk_test", caFile: "\(folder.path)/other/ca.pem")
        configuration.timeout = .seconds(5)
        let client = try LicenseClient(configuration)
        do throws(LicenseClientError) {
            _ = try await client.activate(key: "any", fingerprint: "fp")
            Issue.record("a certificate from another CA was accepted")
        } catch {
            #expect(error.code == .unavailable, "\(error)")
        }
        await client.close()
        // Without a pinned CA, a TCP gateway is not even tried.
        #expect(throws: LicenseClientError.self) { _ = try LicenseClient(LicenseClient.Configuration(endpoint: "127.0.0.1:\(port)", apiKey: "lmk_test")) }
    }
}

/// The stand-in gateway's behaviour, switched by the test.
final class ManualMode: @unchecked Sendable {
    private let lock = NSLock()
    private var value = "genuine"
    var current: String { lock.withLock { value } }
    func set(_ mode: String) { lock.withLock { value = mode } }
}
