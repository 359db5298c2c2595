import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

/// The slice through all five executables, driven through the gateway.
@Suite(.serialized) struct SliceTests {
    @Test func issueValidateRevokeExpireAndSurviveIssuanceOutage() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient()
        defer { Task { await gateway.close() } }

        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "CAD Pro", code: "CADPRO"))
        let policy = try await gateway.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(productId: product.id, name: "Yearly", licenseType: .enterprise, durationSeconds: 365 * 86400, features: ["export"])))
        let shortPolicy = try await gateway.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(productId: product.id, name: "Two seconds", licenseType: .enterprise, durationSeconds: 2)))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme", email: "ops@acme.test"))
        let kept = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let revoked = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let expiring = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: shortPolicy.id, customerId: customer.id))

        func validate(_ key: String) async throws -> ValidateResponse {
            try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: key))
        }
        /// Polls until the answer is `reason`; returns how long that took. Every 60 ms: the
        /// gateway allows 20 validations a second per key (40 in a burst), and a poller that
        /// asks faster for long is rate-limited, as it should be.
        func waitFor(_ key: String, _ reason: ReasonCode, within limit: Duration) async throws -> Duration {
            let start = ContinuousClock.now
            while ContinuousClock.now - start < limit {
                if try await validate(key).reason == reason { return ContinuousClock.now - start }
                try await Task.sleep(for: .milliseconds(60))
            }
            Issue.record("validate did not answer \(reason) within \(limit); last: \(try await validate(key).reason)")
            return limit
        }

        _ = try await waitFor(kept.licenseKey, .valid, within: .seconds(3))
        #expect(try await validate(kept.licenseKey).valid)
        #expect(try await validate(LicenseKey.generate().description).reason == .notFound)

        _ = try await gateway.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: revoked.license!.id, reason: "chargeback"))
        let revokedAfter = try await waitFor(revoked.licenseKey, .revoked, within: .seconds(15))
        // A revocation may take up to the feed interval (200 ms); a loaded machine, longer.
        #expect(revokedAfter < .seconds(5), "REVOKED took \(revokedAfter)")

        _ = try await waitFor(expiring.licenseKey, .expired, within: .seconds(5))

        // Issuance down: validation answers from its replica; routed issuance calls fail fast.
        #expect(await stack.stop("issuance") == 0)
        #expect(try await validate(kept.licenseKey).reason == .valid)
        #expect(try await validate(revoked.licenseKey).reason == .revoked)
        await #expect(throws: RPCError.self) {
            _ = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(id: kept.license!.id), timeout: .seconds(3))
        }
        let health = try await gateway.call(GatewayMethods.health, HealthCheckRequest())
        #expect(health.components.first { $0.name == "issuance" }?.code == .unavailable)
        #expect(health.components.first { $0.name == "validation" }?.code == .ok)

        // Issuance back: validation catches up with what happened meanwhile... and nothing was lost.
        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        try await stack.waitUntilGatewaySees("issuance")
        let again = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(id: kept.license!.id))
        #expect(again.state == .active)
        let late = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        _ = try await waitFor(late.licenseKey, .valid, within: .seconds(5))
        // A revocation after the restart reaches validation within a second.
        _ = try await gateway.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: kept.license!.id, reason: "after restart"))
        _ = try await waitFor(kept.licenseKey, .revoked, within: .seconds(15))
    }

    @Test func sigtermUnderLoadLosesNoAcknowledgedWrite() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let issuance = RPCClient(endpoint: stack.endpoint("issuance"), configuration: .init(connections: 4))
        let product = try await issuance.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Load", code: "LOAD"))
        let policy = try await issuance.call(
            IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: .perUser)))
        let customer = try await issuance.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Load Co"))

        let issued = Counter()
        let acknowledged = try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<16 {
                group.addTask {
                    var ids: [String] = []
                    while true {
                        do {
                            let license = try await issuance.call(
                                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id), timeout: .seconds(5))
                            ids.append(license.license!.id)
                            issued.increment()
                        } catch {
                            return ids
                        }
                    }
                }
            }
            // Stopped in the middle of the load: after real work, whatever the machine's speed.
            #expect(await eventually(within: .seconds(60)) { issued.value >= 50 })
            #expect(await stack.stop("issuance") == 0, "issuance did not exit 0 on SIGTERM: \(stack.log("issuance"))")
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }
        await issuance.close()
        #expect(acknowledged.count > 10)

        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        let reopened = RPCClient(endpoint: stack.endpoint("issuance"))
        var missing: [String] = []
        for id in acknowledged {
            if (try? await reopened.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id))) == nil { missing.append(id) }
        }
        await reopened.close()
        #expect(missing.isEmpty, "acknowledged but lost: \(missing)")
    }

    @Test func licensectlWalkThrough() async throws {
        let stack = try Stack()
        try await stack.startAll()

        let product = try await stack.ctlJSON(["product", "create", "--name", "CAD Pro", "--code", "CADPRO"])["id"] as! String
        let policy = try await stack.ctlJSON(["policy", "create", "--product", product, "--name", "Standard", "--duration", "365d", "--features", "export,render", "--max-machines", "2"])["id"] as! String
        let customer = try await stack.ctlJSON(["customer", "create", "--name", "Acme"])["id"] as! String
        let issued = try await stack.ctlJSON(["license", "issue", "--policy", policy, "--customer", customer])
        let key = issued["license_key"] as! String
        let license = (issued["license"] as! [String: Any])["id"] as! String

        #expect(try await stack.ctl(["validate", key, "--fingerprint", "laptop-1"]).1.contains("NOT_ACTIVATED"))
        let (activated, certificate) = try await stack.ctl(["activate", key, "--fingerprint", "laptop-1", "--name", "Ann's laptop"])
        #expect(activated == 0, "\(certificate)")
        #expect(certificate.contains("BEGIN LICENSE CERTIFICATE"))
        #expect(try await stack.ctl(["validate", key, "--fingerprint", "laptop-1", "--feature", "render"]).0 == 0)
        #expect(try await stack.ctl(["validate", key, "--fingerprint", "laptop-1", "--feature", "fly"]).0 == 1)
        #expect(try await stack.ctl(["validate", key, "--fingerprint", "laptop-2"]).1.contains("FINGERPRINT_MISMATCH"))
        #expect(try await stack.ctl(["machines", license]).1.contains("Ann's laptop"))
        let file = "\(stack.folder)/offline.lic"
        #expect(try await stack.ctl(["offline-file", key, "--fingerprint", "airgapped", "--valid", "30d", "--encrypt", "--output", file]).0 == 0)
        #expect(try await stack.ctl(["verify-file", file, "--fingerprint", "airgapped", "--key", key]).0 == 0)
        #expect(try await stack.ctl(["verify-file", file, "--fingerprint", "airgapped"]).0 == 1)
        #expect(try await stack.ctl(["verify-file", file, "--fingerprint", "elsewhere", "--key", key]).0 == 1)
        #expect(try await stack.ctl(["validate", "not-a-key"]).0 == 2)
        #expect(try await stack.ctl(["license", "show", license]).1.contains("ACTIVE"))
        #expect(try await stack.ctl(["license", "revoke", license]).0 == 0)
        // The revocation reaches validation by the feed, within its interval on an idle machine.
        var (revokedStatus, revokedOutput) = try await stack.ctl(["validate", key, "--fingerprint", "laptop-1"])
        for _ in 0..<150 where !revokedOutput.contains("REVOKED") {
            try await Task.sleep(for: .milliseconds(100))
            (revokedStatus, revokedOutput) = try await stack.ctl(["validate", key, "--fingerprint", "laptop-1"])
        }
        #expect(revokedStatus == 1)
        #expect(revokedOutput.contains("REVOKED"))
        #expect(try await stack.ctl(["license", "show", "lic_nothing"]).0 == 2)
        #expect(try await stack.ctl(["validate"]).0 == 2)
        #expect(try await stack.ctl(["health"]).0 == 0)
    }
}

@Suite(.serialized) struct CrashTests {
    /// Issuance is killed with SIGKILL while a client issues licenses with idempotency keys
    /// and retries each until it is acknowledged: afterwards every acknowledged license
    /// exists exactly once and the change feed has no gap.
    @Test func sigkillDuringIssuingLosesAndDuplicatesNothing() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let issuance = RPCClient(endpoint: stack.endpoint("issuance"), configuration: .init(connections: 1, connectTimeout: .milliseconds(200)))
        let product = try await issuance.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Crash", code: "CRASH"))
        let policy = try await issuance.call(
            IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: .perUser)))
        let customer = try await issuance.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Crash Co"))

        let progress = Counter()
        let killer = Task {
            // Killed in the middle of the load, after real work, whatever the machine's speed.
            _ = await eventually(within: .seconds(60)) { progress.value >= 30 }
            stack.kill("issuance")
            try await Task.sleep(for: .milliseconds(300))
            try stack.start("issuance")
        }
        var acknowledged: [String] = []
        for index in 0..<150 {
            let metadata: RPCMetadata = [RPCMetadata.idempotencyKey: "order-\(index)"]
            let request = IssueLicenseRequest(policyId: policy.id, customerId: customer.id)
            var attempts = 0
            while true {
                attempts += 1
                do {
                    let issued = try await issuance.call(IssuanceMethods.issueLicense, request, metadata: metadata, timeout: .seconds(2))
                    acknowledged.append(issued.license!.id)
                    progress.increment()
                    break
                } catch {
                    #expect(attempts < 200, "request \(index) never succeeded: \(error)")
                    if attempts >= 200 { break }
                    try await Task.sleep(for: .milliseconds(25))
                }
            }
        }
        try await killer.value

        #expect(acknowledged.count == 150)
        #expect(Set(acknowledged).count == 150)
        let stored = try await allPages { token in
            let page = try await issuance.call(
                IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customer.id, page: PageRequest(pageSize: 100, pageToken: token)))
            return (page.licenses.map(\.id), page.nextPageToken)
        }
        #expect(Set(stored) == Set(acknowledged), "stored \(stored.count), acknowledged \(acknowledged.count)")

        let feed = try await issuance.call(IssuanceMethods.changes, ChangesRequest(afterSeq: 0, limit: 5000))
        #expect(feed.events.map(\.seq) == Array(1...feed.lastSeq))
        #expect(feed.events.filter { $0.action == "license.issued" }.count == 150)
        await issuance.close()
    }
}

@Suite(.serialized) struct ValidationCrashTests {
    /// SIGKILL of validation while products activate machines and take seats: every
    /// acknowledged activation is there after the restart, and seats never exceed the limit.
    @Test func sigkillDuringActivationsLosesNoAcknowledgedActivation() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient(connectTimeout: .milliseconds(200))
        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Node", code: "NODE"))
        let policy = try await gateway.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: .perDevice, maxMachines: 1000, maxSeats: 3)))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Node Co"))
        var keys: [String] = []
        for _ in 0..<8 {
            keys.append(try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id)).licenseKey)
        }

        let progress = Counter()
        let killer = Task {
            _ = await eventually(within: .seconds(60)) { progress.value >= 40 }
            stack.kill("validation")
            try await Task.sleep(for: .milliseconds(200))
            try stack.start("validation")
        }
        let acknowledged = try await withThrowingTaskGroup(of: [(String, String)].self) { group in
            for (worker, key) in keys.enumerated() {
                group.addTask {
                    var done: [(String, String)] = []
                    for index in 0..<40 {
                        let fingerprint = "w\(worker)-m\(index)"
                        if let response = try? await gateway.call(
                            ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: fingerprint), timeout: .seconds(2)),
                            response.reason == .valid
                        {
                            done.append((key, fingerprint))
                            progress.increment()
                        }
                        if let seat = try? await gateway.call(
                            ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: fingerprint, ttlSeconds: 600), timeout: .seconds(2))
                        {
                            #expect(seat.seatsInUse <= 3)
                        }
                    }
                    return done
                }
            }
            var all: [(String, String)] = []
            for try await part in group { all += part }
            return all
        }
        try await killer.value
        try await stack.waitUntilServing("validation")
        try await stack.waitUntilGatewaySees("validation")
        #expect(acknowledged.count > 0)

        for (key, fingerprint) in acknowledged {
            let answer = try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: fingerprint))
            #expect(answer.reason == .valid, "activation of \(fingerprint) was acknowledged but is gone: \(answer.reason)")
        }
        for key in keys {
            let license = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: key))
            let seats = try await gateway.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: license.id))
            #expect(seats.leases.count <= 3)
        }
        await gateway.close()
    }
}

@Suite(.serialized) struct UsageCrashTests {
    /// license-usage killed with SIGKILL while a product records batches and retries each
    /// until it is acknowledged: afterwards every event is counted exactly once.
    @Test func sigkillMidBatchCountsEveryEventOnce() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let issuance = RPCClient(endpoint: stack.endpoint("issuance"))
        let product = try await issuance.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Meter", code: "METER"))
        let policy = try await issuance.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: .enterprise)))
        let customer = try await issuance.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Meter Co"))
        let license = try #require(try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id)).license)
        await issuance.close()
        let usage = RPCClient(endpoint: stack.endpoint("usage"), configuration: .init(connections: 1, connectTimeout: .milliseconds(200)))
        defer { Task { await usage.close() } }

        let progress = Counter()
        let killer = Task {
            _ = await eventually(within: .seconds(60)) { progress.value >= 10 }
            stack.kill("usage")
            try stack.start("usage")
        }
        let batches = 40
        for batch in 0..<batches {
            let events = (0..<100).map { UsageEvent(eventId: "b\(batch)-e\($0)", licenseId: license.id, feature: "export", quantity: 1) }
            var attempts = 0
            while true {
                attempts += 1
                do {
                    let answer = try await usage.call(UsageMethods.recordUsage, RecordUsageRequest(events: events), timeout: .seconds(5))
                    #expect(answer.rejected.isEmpty, "\(answer.rejected.first?.reason ?? "")")
                    progress.increment()
                    break
                } catch {
                    #expect(attempts < 300, "batch \(batch) never acknowledged: \(error)")
                    if attempts >= 300 { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
        }
        try await killer.value
        let summary = try await usage.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.id), timeout: .seconds(10))
        #expect(summary.features.map(\.quantity) == [UInt64(batches * 100)], "every event once: \(summary.features)")
        #expect(summary.features.map(\.events) == [UInt64(batches * 100)])
    }
}
