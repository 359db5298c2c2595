import Foundation
@testable import GatewayService
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import LicensingTestSupport
import Testing
import ValidationService

/// A gateway in-process, in front of whatever listens at the given service sockets.
struct TestGateway {
    let service: GatewayService
    let endpoint: Endpoint
    let tcp: Endpoint?

    func client(_ secret: String?, connections: Int = 1) -> RPCClient {
        var metadata = RPCMetadata()
        if let secret { metadata[RPCMetadata.apiKey] = secret }
        return RPCClient(endpoint: endpoint, configuration: RPCClientConfiguration(connections: connections, metadata: metadata))
    }

    func key(_ role: Role, tenant: String = "default") async throws -> String {
        try await service.credentials.create(name: "\(role)", tenant: tenant, role: role, expiresAt: 0, now: SystemLicenseClock().now).1
    }
}

func withGateway<T>(
    folder: TemporaryFolder, services: String? = nil, backends: [String: Endpoint] = [:], limits: GatewayService.Limits = GatewayService.Limits(),
    tls: NIOSSLContext? = nil, _ body: (TestGateway) async throws -> T
) async throws -> T {
    let base = services ?? folder.path
    func client(_ name: String) -> RPCClient {
        RPCClient(endpoint: backends[name] ?? .unix(path: "\(base)/\(name).sock"), configuration: .init(connectTimeout: .milliseconds(500)))
    }
    let gateway = try GatewayService(
        backends: Backends(issuance: client("issuance"), validation: client("validation"), usage: client("usage"), reporting: client("reporting")),
        database: try GatewayService.openDatabase(path: "\(folder.path)/gateway.sqlite"), limits: limits, logger: Logger(label: "test.gateway"))
    var endpoints: [Endpoint] = [.unix(path: "\(folder.path)/gateway.sock")]
    if tls != nil { endpoints.append(.tcp(host: "127.0.0.1", port: 0)) }
    let server = RPCServer(router: gateway.router(), configuration: RPCServerConfiguration(endpoints: endpoints, tls: tls), logger: Logger(label: "test.gateway"))
    let running = Task { try await server.run() }
    defer { running.cancel() }
    let bound = try await server.listeningEndpoints
    return try await body(TestGateway(service: gateway, endpoint: bound[0], tcp: bound.count > 1 ? bound[1] : nil))
}

@Suite struct GatewayTests {
    static let publicMethods: [WireMethodInfo] = IssuanceMethods.all + ValidationMethods.all + UsageMethods.all + ReportingMethods.all + GatewayMethods.all
    static let roles: [Role] = [.admin, .issuer, .support, .auditor, .integration, .product, .console]

    /// Every public method for every role: refused with PERMISSION_DENIED exactly where the
    /// table says so. (The services behind are down, so admitted calls end UNAVAILABLE or,
    /// for the gateway's own methods, with their own answer.)
    @Test func everyMethodForEveryRoleFollowsThePermissionTable() async throws {
        let folder = TemporaryFolder()
        try await withGateway(folder: folder) { gateway in
            var clients: [Role: RPCClient] = [:]
            for role in Self.roles { clients[role] = gateway.client(try await gateway.key(role)) }
            for method in Self.publicMethods {
                for role in Self.roles {
                    let client = clients[role]!
                    var code: StatusCode = .ok
                    // A generous deadline: this test is about permissions, and it shares the
                    // machine with the suite's heaviest tests (a million keys, 1,000 connections).
                    let deadline = ContinuousClock.now + .seconds(15)
                    do {
                        if method.serverStreaming {
                            for try await _ in try await client.streamRaw(method.name, payload: [], metadata: [:], deadline: deadline) {}
                        } else {
                            _ = try await client.callRaw(method.name, payload: [], metadata: [:], deadline: deadline)
                        }
                    } catch let error as RPCError {
                        code = error.code
                    }
                    let allowed = Permissions.allows(role, method.name)
                    #expect((code == .permissionDenied) == !allowed, "\(role) calling \(method.name): \(code)")
                }
            }
            // A tenant admin: everything but what the operator and the services keep.
            let tenantAdmin = gateway.client(try await gateway.key(.admin, tenant: "acme"))
            for method in Self.publicMethods {
                var code: StatusCode = .ok
                let deadline = ContinuousClock.now + .seconds(15)
                do {
                    if method.serverStreaming {
                        for try await _ in try await tenantAdmin.streamRaw(method.name, payload: [], metadata: [:], deadline: deadline) {}
                    } else {
                        _ = try await tenantAdmin.callRaw(method.name, payload: [], metadata: [:], deadline: deadline)
                    }
                } catch let error as RPCError {
                    code = error.code
                }
                let kept = Permissions.servicesOnly.contains(method.name) || Permissions.operatorOnly.contains(method.name)
                    || Permissions.holderOnly.contains(method.name) || Permissions.consoleOnly.contains(method.name)
                #expect((code == .permissionDenied) == kept, "a tenant admin calling \(method.name): \(code)")
            }
            await tenantAdmin.close()
            for client in clients.values { await client.close() }
        }
    }

    /// Buckets refuse past their burst, refill at their rate, and buckets left idle long
    /// enough to be full again are dropped, so memory follows the keys in use.
    @Test func tokenBucketsRefillAndForgetIdleKeys() throws {
        let clock = SharedValue<UInt32>(1_000)
        let buckets = TokenBuckets<String>(rate: 100, burst: 2, milliseconds: { clock.withLock { $0 } })
        #expect(buckets.take("k") == nil)
        #expect(buckets.take("k") == nil)
        let wait = try #require(buckets.take("k"))
        #expect(wait > 0 && wait <= 0.01)
        for index in 0..<1_000 { _ = buckets.take("old-\(index)") }
        #expect(buckets.count == 1_001)
        clock.withLock { $0 += 9 }
        #expect(buckets.take("k") != nil, "not refilled 9 ms later (a token takes 10 ms)")
        clock.withLock { $0 += 60 }
        #expect(buckets.take("k") == nil, "refilled after the wait")
        for index in 0..<400 { _ = buckets.take("new-\(index)") }
        #expect(buckets.count <= 401, "\(buckets.count) buckets kept; idle ones should be gone")
    }

    @Test func thePermissionTableSaysWhatEachRoleIsFor() {
        // Deny by default: what the table does not name is for admins only.
        #expect(Permissions.allows(.admin, IssuanceMethods.listAuditEvents.name))
        // The feeds and per-service erasures are for the services: no API key reaches them.
        for method in Permissions.servicesOnly {
            for role in Self.roles { #expect(!Permissions.allows(role, method)) }
        }
        for role in Self.roles where role != .admin {
            #expect(!Permissions.allows(role, IssuanceMethods.changes.name))
            #expect(!Permissions.allows(role, GatewayMethods.createApiKey.name))
            #expect(!Permissions.allows(role, GatewayMethods.eraseCustomer.name))
            #expect(!Permissions.allows(role, "licensing.v1.Issuance/NoSuchMethod"))
        }
        #expect(Permissions.allows(.product, ValidationMethods.validate.name))
        #expect(!Permissions.allows(.product, IssuanceMethods.issueLicense.name))
        #expect(Permissions.allows(.issuer, IssuanceMethods.revokeLicense.name))
        #expect(!Permissions.allows(.support, IssuanceMethods.revokeLicense.name))
        #expect(Permissions.allows(.support, IssuanceMethods.getLicense.name))
        #expect(Permissions.allows(.auditor, IssuanceMethods.verifyAuditChain.name))
        #expect(!Permissions.allows(.auditor, ValidationMethods.validate.name))
        #expect(Permissions.allows(.integration, IssuanceMethods.recordPayment.name))
        #expect(!Permissions.allows(.integration, IssuanceMethods.revokeLicense.name))
        #expect(!Permissions.allows(.issuer, IssuanceMethods.recordPayment.name))
        // Usage and compliance: products record usage and report tampering; support and
        // auditors read; issuers also set quotas and acknowledge alerts.
        #expect(Permissions.allows(.product, UsageMethods.recordUsage.name) && Permissions.allows(.product, UsageMethods.reportTamper.name))
        #expect(!Permissions.allows(.product, UsageMethods.listAlerts.name) && !Permissions.allows(.product, UsageMethods.setQuota.name))
        for role in [Role.support, .auditor, .issuer] {
            for method in [UsageMethods.getUsage.name, UsageMethods.listAlerts.name, UsageMethods.listQuotas.name] {
                #expect(Permissions.allows(role, method), "\(role) \(method)")
            }
        }
        for role in [Role.support, .auditor] {
            #expect(!Permissions.allows(role, UsageMethods.setQuota.name) && !Permissions.allows(role, UsageMethods.acknowledgeAlert.name))
        }
        #expect(Permissions.allows(.issuer, UsageMethods.setQuota.name) && Permissions.allows(.issuer, UsageMethods.acknowledgeAlert.name))
        #expect(Permissions.servicesOnly.contains(UsageMethods.feed.name) && Permissions.servicesOnly.contains(ValidationMethods.events.name))
        // What replicas ask their primary for: machines and another replica's log are no API key's business.
        #expect(Permissions.servicesOnly.isSuperset(of: [ValidationMethods.replicaMachines.name, ValidationMethods.appendReplicaLog.name]))
    }

    @Test func missingUnknownRevokedAndExpiredKeysAreUnauthenticated() async throws {
        let folder = TemporaryFolder()
        try await withGateway(folder: folder) { gateway in
            func code(_ secret: String?) async -> StatusCode {
                let client = gateway.client(secret)
                defer { Task { await client.close() } }
                do {
                    _ = try await client.call(GatewayMethods.listApiKeys, ListApiKeysRequest())
                    return .ok
                } catch let error as RPCError {
                    return error.code
                } catch {
                    return .unknown
                }
            }
            let admin = try await gateway.key(.admin)
            #expect(await code(admin) == .ok)
            #expect(await code(nil) == .unauthenticated)
            #expect(await code("lmk_" + String(repeating: "a", count: 52)) == .unauthenticated)
            let (created, secret) = try await gateway.service.credentials.create(name: "temp", tenant: "default", role: .admin, expiresAt: 0, now: SystemLicenseClock().now)
            #expect(await code(secret) == .ok)
            _ = try await gateway.service.credentials.revoke(id: created.id, tenant: nil, now: SystemLicenseClock().now)
            #expect(await code(secret) == .unauthenticated)
            let (_, expired) = try await gateway.service.credentials.create(name: "old", tenant: "default", role: .admin, expiresAt: SystemLicenseClock().now - 1, now: SystemLicenseClock().now - 100)
            #expect(await code(expired) == .unauthenticated)

            // Keys are stored only as hashes.
            let stored = try Data(contentsOf: URL(fileURLWithPath: "\(folder.path)/gateway.sqlite"))
                + ((try? Data(contentsOf: URL(fileURLWithPath: "\(folder.path)/gateway.sqlite-wal"))) ?? Data())
            #expect(stored.range(of: Data(admin.utf8)) == nil)

            // Admin RPCs: a secret shown once, listed without it, revoked at once.
            let adminClient = gateway.client(admin)
            let made = try await adminClient.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "billing", tenantId: "acme", role: .integration))
            #expect(made.secret.hasPrefix("lmk_"))
            let listed = try await adminClient.call(GatewayMethods.listApiKeys, ListApiKeysRequest(tenantId: "acme"))
            #expect(listed.apiKeys.map(\.id) == [made.apiKey!.id])
            _ = try await adminClient.call(GatewayMethods.revokeApiKey, GetByIdRequest(id: made.apiKey!.id))
            #expect(await code(made.secret) == .unauthenticated)
            await #expect(throws: RPCError.self) {
                _ = try await adminClient.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "x", role: .unspecified))
            }
            await adminClient.close()
        }
    }

    @Test func failedAuthenticationsAreLimitedPerSource() async throws {
        var limits = GatewayService.Limits()
        limits.failedAuthPerSource = (rate: 0.01, burst: 3)
        let folder = TemporaryFolder()
        try await withGateway(folder: folder, limits: limits) { gateway in
            let good = try await gateway.key(.admin)
            let bad = gateway.client("lmk_wrong")
            var codes: [StatusCode] = []
            for _ in 0..<5 {
                do { _ = try await bad.call(GatewayMethods.listApiKeys, ListApiKeysRequest()) } catch let error as RPCError { codes.append(error.code) }
            }
            #expect(codes == [.unauthenticated, .unauthenticated, .unauthenticated, .resourceExhausted, .resourceExhausted])
            // The source (here: this process) is blocked as a whole while it cools down;
            // another local process is not (EndToEndTests: a misbehaving client and licensectl).
            let goodClient = gateway.client(good)
            await #expect(throws: RPCError(.resourceExhausted, "too many failed authentications from this process or user; wait and try again", metadata: [RPCMetadata.retryAfter: "100"])) {
                _ = try await goodClient.call(GatewayMethods.listApiKeys, ListApiKeysRequest())
            }
            await bad.close()
            await goodClient.close()
        }
    }

    @Test func aBurstOverTheRateLimitIsRefusedAndOthersAreUnaffected() async throws {
        var limits = GatewayService.Limits()
        limits.perRole[.support] = (rate: 0.1, burst: 5)
        let folder = TemporaryFolder()
        try await withGateway(folder: folder, limits: limits) { gateway in
            let noisy = gateway.client(try await gateway.key(.support))
            let quiet = gateway.client(try await gateway.key(.support))
            var refused: RPCError?
            for _ in 0..<8 {
                do {
                    _ = try await noisy.call(GatewayMethods.health, HealthCheckRequest())
                } catch let error as RPCError {
                    refused = error
                }
            }
            #expect(refused?.code == .resourceExhausted)
            #expect(Int(refused?.metadata[RPCMetadata.retryAfter] ?? "") ?? 0 >= 1)
            _ = try await quiet.call(GatewayMethods.health, HealthCheckRequest())
            await noisy.close()
            await quiet.close()
        }
    }

    /// Validations per license key are limited across credentials.
    @Test func validationsArePerLicenseKeyLimited() async throws {
        var limits = GatewayService.Limits()
        limits.validatePerKey = (rate: 0.01, burst: 2)
        let folder = TemporaryFolder()
        try await withGateway(folder: folder, limits: limits) { gateway in
            let product = gateway.client(try await gateway.key(.product))
            let key = LicenseKey.generate().description
            var codes: [StatusCode] = []
            for _ in 0..<3 {
                do { _ = try await product.call(ValidationMethods.validate, ValidateRequest(licenseKey: key)) } catch let error as RPCError { codes.append(error.code) }
            }
            // Validation itself is down here: admitted calls end UNAVAILABLE.
            #expect(codes == [.unavailable, .unavailable, .resourceExhausted])
            await #expect(throws: RPCError.self) {
                _ = try await product.call(ValidationMethods.validate, ValidateRequest(licenseKey: LicenseKey.generate().description))
            }
            await product.close()
        }
    }

    /// Issuance and validation behind a gateway; tenants only see their own.
    @Test func aTenantCannotReadOrChangeAnotherTenantsLicense() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let folder = TemporaryFolder()
            try await withGateway(folder: folder, backends: ["issuance": issuance.endpoint, "validation": validation.endpoint]) { gateway in
                let acme = gateway.client(try await gateway.key(.issuer, tenant: "acme"))
                let globex = gateway.client(try await gateway.key(.issuer, tenant: "globex"))
                let globexProduct = gateway.client(try await gateway.key(.product, tenant: "globex"))
                let acmeProduct = gateway.client(try await gateway.key(.product, tenant: "acme"))
                let (policy, customer) = try await seedCatalogue(acme)
                let issued = try await acme.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
                let id = issued.license!.id
                #expect(issued.license?.tenantId == "acme")

                for attempt in [
                    await expectCode(.notFound) { _ = try await globex.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)) },
                    await expectCode(.notFound) { _ = try await globex.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: issued.licenseKey)) },
                    await expectCode(.notFound) { _ = try await globex.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: id)) },
                    await expectCode(.notFound) { _ = try await globex.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: id)) },
                    await expectCode(.notFound) { _ = try await globex.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)) },
                    await expectCode(.notFound) { _ = try await globex.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: id)) },
                    // Setting the tenant oneself does nothing: the gateway replaces it.
                    await expectCode(.notFound) {
                        _ = try await globex.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id), metadata: [RPCMetadata.tenant: "acme"])
                    },
                ] {
                    #expect(attempt == nil, "\(attempt ?? "")")
                }
                #expect(try await globex.call(IssuanceMethods.listLicenses, ListLicensesRequest()).licenses.isEmpty)
                #expect(try await globexProduct.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey)).reason == .notFound)
                #expect(try await acmeProduct.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey)).reason == .valid)
                #expect(try await acme.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).state == .active)
                for client in [acme, globex, globexProduct, acmeProduct] { await client.close() }
            }
        }
    }

    /// With validation stopped: the overview comes back partial, routed calls to validation
    /// fail fast after the first, and calls to issuance are unaffected.
    @Test func aStoppedBackendCostsOnlyItsOwnParts() async throws {
        try await withIssuanceAndValidation { issuance, _ in
            let folder = TemporaryFolder()
            try await withGateway(folder: folder, backends: ["issuance": issuance.endpoint]) { gateway in
                let admin = gateway.client(try await gateway.key(.admin))
                let (policy, customer) = try await seedCatalogue(admin)
                let id = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).license!.id

                let overview = try await admin.call(GatewayMethods.licenseOverview, GetByIdRequest(id: id))
                #expect(overview.license?.id == id)
                #expect(overview.parts.first { $0.service == "validation" }?.code == .unavailable)
                #expect(overview.parts.first { $0.service == "issuance" }?.code == .ok)

                let first = await expectCode(.unavailable) { _ = try await admin.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: id)) }
                #expect(first == nil)
                do {
                    _ = try await admin.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: id))
                    Issue.record("a call to a stopped backend succeeded")
                } catch let error as RPCError {
                    #expect(error.code == .unavailable)
                    #expect(error.message.contains("failing fast"))
                }
                #expect(try await admin.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).id == id)
                let health = try await admin.call(GatewayMethods.health, HealthCheckRequest())
                #expect(health.components.map(\.name) == ["gateway", "issuance", "validation", "usage", "reporting"])
                #expect(health.components.first { $0.name == "issuance" }?.code == .ok)
                #expect(health.components.first { $0.name == "validation" }?.code == .unavailable)
                await admin.close()
            }
        }
    }

    @Test func erasureFansOutAndIsIdempotent() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let folder = TemporaryFolder()
            try await withGateway(folder: folder, backends: ["issuance": issuance.endpoint, "validation": validation.endpoint]) { gateway in
                let admin = gateway.client(try await gateway.key(.admin))
                let (policy, _) = try await seedCatalogue(admin, type: .perUser)
                let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Jane Roe", email: "jane@example.org", crmId: "crm-7"))
                let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer.id))
                _ = try await admin.call(IssuanceMethods.assignUser, AssignUserRequest(id: issued.license!.id, user: "jane.roe"))
                // The named user reaches validation with the next feed poll.
                var activated = false
                for _ in 0..<100 where !activated {
                    let answer = try await admin.call(
                        ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "jane-pc", machineName: "Jane's PC", user: "jane.roe"))
                    activated = answer.reason == .valid
                    if !activated { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(activated)

                let erased = try await admin.call(GatewayMethods.eraseCustomer, EraseCustomerRequest(customerId: customer.id))
                #expect(erased.parts.map(\.service) == ["issuance", "validation", "usage", "reporting"])
                #expect(erased.parts.filter { $0.service == "issuance" || $0.service == "validation" }.allSatisfy { $0.code == .ok })
                #expect((erased.erased.first { $0.service == "issuance" }?.recordsErased ?? 0) > 0)
                #expect((erased.erased.first { $0.service == "validation" }?.recordsErased ?? 0) > 0)
                let after = try await admin.call(IssuanceMethods.getCustomer, GetByIdRequest(id: customer.id))
                #expect(after.name != "Jane Roe" && after.email.isEmpty && after.crmId.isEmpty)
                let feed = try await issuance.call(IssuanceMethods.changes, ChangesRequest(limit: 5000))
                let text = feed.events.map { "\($0)" }.joined()
                #expect(!text.contains("Jane Roe") && !text.contains("jane@example.org") && !text.contains("jane.roe"))
                let machines = try await admin.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: issued.license!.id))
                #expect(machines.machines.allSatisfy { $0.name.isEmpty })

                let again = try await admin.call(GatewayMethods.eraseCustomer, EraseCustomerRequest(customerId: customer.id))
                #expect(again.erased.allSatisfy { $0.recordsErased == 0 }, "\(again.erased)")
                await admin.close()
            }
        }
    }
}
