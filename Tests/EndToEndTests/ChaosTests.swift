import Foundation
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Synchronization
import Testing

/// What the load saw, shared by its workers and the killer.
private final class ChaosLedger: Sendable {
    private let state = Mutex((
        down: String?.none, licenses: [String](), activations: [(key: String, fingerprint: String)](), usageEvents: 0,
        validations: 0, failedValidations: [String](), mostSeats: 0, kills: 0, writes: 0))

    func down(_ service: String?) { state.withLock { $0.down = service } }
    var down: String? { state.withLock { $0.down } }
    func issued(_ id: String) { state.withLock { $0.licenses.append(id); $0.writes += 1 } }
    func activated(_ key: String, _ fingerprint: String) { state.withLock { $0.activations.append((key, fingerprint)); $0.writes += 1 } }
    func recorded(_ events: Int) { state.withLock { $0.usageEvents += events; $0.writes += 1 } }
    func seats(_ inUse: UInt32) { state.withLock { $0.mostSeats = max($0.mostSeats, Int(inUse)) } }
    func killed() { state.withLock { $0.kills += 1 } }
    /// A validation's outcome; a failure counts against the run unless validation itself or
    /// the gateway in front of it was the service killed at the time.
    func validated(_ failure: String?) {
        state.withLock { state in
            state.validations += 1
            guard let failure, state.down != "validation", state.down != "gateway" else { return }
            state.failedValidations.append("with \(state.down ?? "nothing") down: \(failure)")
        }
    }
    var writes: Int { state.withLock { $0.writes } }
    var snapshot: (licenses: [String], activations: [(key: String, fingerprint: String)], usageEvents: Int, validations: Int, failedValidations: [String], mostSeats: Int, kills: Int) {
        state.withLock { ($0.licenses, $0.activations, $0.usageEvents, $0.validations, $0.failedValidations, $0.mostSeats, $0.kills) }
    }
}

/// kill -9 of every service in turn, several times, under a mixed load through the gateway
/// (issue, validate, activate, seats, usage), each restarted after it: every acknowledged
/// write is there exactly once, no seat is over-granted, validations never fail while a
/// service other than validation (or the gateway) is down, the audit chain verifies and the
/// change feed has no gap. One kill per service here; `deploy/chaos ROUNDS` runs more.
@Suite(.serialized) struct ChaosTests {
    static let services = ["issuance", "validation", "usage", "reporting", "integrations", "gateway"]

    @Test func killingEveryServiceInTurnLosesNothingAcknowledged() async throws {
        let rounds = Int(ProcessInfo.processInfo.environment["LM_CHAOS_ROUNDS"] ?? "") ?? 1
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient(connections: 4, connectTimeout: .milliseconds(300))
        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Chaos", code: "CHAOS"))
        let policy = try await gateway.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "P", licenseType: .perDevice, maxMachines: 100_000, maxSeats: 2, features: ["export"])))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Chaos Co"))
        let seeded = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let key = seeded.licenseKey
        _ = try await gateway.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "validator"))
        let ledger = ChaosLedger()
        let stop = Flag()

        /// Retries a write until it is acknowledged (the same idempotency key or event ids each
        /// time), as a client that must not lose it does.
        func untilAcknowledged<T: Sendable>(_ what: String, _ body: () async throws -> T) async -> T? {
            for _ in 0..<600 {
                if let value = try? await body() { return value }
                try? await Task.sleep(for: .milliseconds(50))
            }
            Issue.record("\(what) was never acknowledged")
            return nil
        }

        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {  // issue licenses
                    var index = 0
                    while !stop.isSet {
                        let metadata: RPCMetadata = [RPCMetadata.idempotencyKey: "chaos-order-\(index)"]
                        if let issued = await untilAcknowledged("order \(index)", {
                            try await gateway.call(
                                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id),
                                metadata: metadata, timeout: .seconds(2))
                        }) { ledger.issued(issued.license!.id) }
                        index += 1
                    }
                }
                group.addTask {  // activate machines
                    var index = 0
                    while !stop.isSet {
                        let fingerprint = "machine-\(index)"
                        if let answer = await untilAcknowledged("activation \(index)", {
                            try await gateway.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: fingerprint), timeout: .seconds(2))
                        }), answer.reason == .valid { ledger.activated(key, fingerprint) }
                        index += 1
                    }
                }
                group.addTask {  // record usage, 20 events a batch
                    var batch = 0
                    while !stop.isSet {
                        let events = (0..<20).map { UsageEvent(eventId: "chaos-\(batch)-\($0)", licenseKey: key, feature: "export", quantity: 1) }
                        if let answer = await untilAcknowledged("usage batch \(batch)", {
                            try await gateway.call(UsageMethods.recordUsage, RecordUsageRequest(events: events), timeout: .seconds(3))
                        }) {
                            #expect(answer.rejected.isEmpty, "\(answer.rejected.first?.reason ?? "")")
                            ledger.recorded(events.count)
                        }
                        batch += 1
                    }
                }
                group.addTask {  // validate, paced (the per-key rate limit)
                    while !stop.isSet {
                        do {
                            let answer = try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: "validator"), timeout: .seconds(2))
                            ledger.validated(answer.reason == .valid ? nil : "\(answer.reason)")
                        } catch {
                            ledger.validated("\(error)")
                        }
                        try? await Task.sleep(for: .milliseconds(150))
                    }
                }
                group.addTask {  // seats: four clients, two seats
                    var turn = 0
                    while !stop.isSet {
                        let client = "seat-client-\(turn % 4)"
                        if let answer = try? await gateway.call(
                            ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: client, ttlSeconds: 600), timeout: .seconds(2)) {
                            ledger.seats(answer.seatsInUse)
                            if let lease = answer.lease, turn % 3 == 0 {
                                _ = try? await gateway.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease.leaseId, licenseKey: key), timeout: .seconds(2))
                            }
                        }
                        turn += 1
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
            }
        }

        for _ in 0..<rounds {
            for service in Self.services {
                // Killed with its writes in flight, after real work, whatever the machine's speed.
                let before = ledger.writes
                _ = await eventually(within: .seconds(60)) { ledger.writes >= before + 10 }
                ledger.down(service)
                stack.kill(service)
                ledger.killed()
                try await Task.sleep(for: .milliseconds(300))
                try stack.start(service)
                try await stack.waitUntilServing(service)
                // Back once the gateway has seen it answer its probe: until then it fails calls
                // to it fast, by design.
                if service != "gateway", service != "integrations" { try await stack.waitUntilGatewaySees(service) }
                ledger.down(nil)
            }
        }
        let before = ledger.writes
        _ = await eventually(within: .seconds(60)) { ledger.writes >= before + 10 }
        stop.set()
        await load.value

        let seen = ledger.snapshot
        // Licenses: every acknowledged one stored, once.
        let stored = try await allPages { token in
            let page = try await gateway.call(
                IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customer.id, page: PageRequest(pageSize: 100, pageToken: token)))
            return (page.licenses.map(\.id), page.nextPageToken)
        }
        #expect(Set(seen.licenses).count == seen.licenses.count, "a license acknowledged twice")
        #expect(Set(stored) == Set(seen.licenses + [seeded.license!.id]), "stored \(stored.count), acknowledged \(seen.licenses.count + 1)")
        #expect(stored.count == seen.licenses.count + 1)
        // The change feed has no gap, and one issued event per license.
        let issuance = RPCClient(endpoint: stack.endpoint("issuance"))
        let feed = try await issuance.call(IssuanceMethods.changes, ChangesRequest(afterSeq: 0, limit: 10_000))
        #expect(feed.events.map(\.seq) == Array(1...feed.lastSeq))
        #expect(feed.events.filter { $0.action == "license.issued" }.count == stored.count)
        let chain = try await issuance.call(IssuanceMethods.verifyAuditChain, VerifyAuditChainRequest())
        #expect(chain.intact, "\(chain.detail)")
        await issuance.close()
        // Activations: each acknowledged machine activated, once.
        let license = try await gateway.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: key))
        let machines = try await allPages { token in
            let page = try await gateway.call(
                ValidationMethods.listMachines, ListMachinesRequest(licenseId: license.id, page: PageRequest(pageSize: 500, pageToken: token)))
            return (page.machines.map(\.fingerprintHash), page.nextPageToken)
        }
        let acknowledgedMachines = Set((seen.activations.map(\.fingerprint) + ["validator"]).map(LicenseCertificates.fingerprintHash))
        #expect(Set(machines) == acknowledgedMachines, "\(machines.count) machines, \(acknowledgedMachines.count) acknowledged")
        #expect(machines.count == acknowledgedMachines.count)
        // Usage: every acknowledged event counted once.
        let usage = try await gateway.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.id), timeout: .seconds(10))
        #expect(usage.features.first { $0.feature == "export" }?.quantity == UInt64(seen.usageEvents), "\(usage.features)")
        // Seats: never more than the two the license has.
        #expect(seen.mostSeats <= 2)
        #expect(seen.failedValidations.isEmpty, "\(seen.failedValidations.prefix(5))")
        #expect(seen.kills == rounds * Self.services.count)
        print("chaos: \(seen.kills) kills; acknowledged \(seen.licenses.count) licenses, \(seen.activations.count) activations, \(seen.usageEvents) usage events; lost 0 of them, duplicated 0; \(seen.validations) validations, \(seen.failedValidations.count) failed while a service other than validation or the gateway was down; most seats held \(seen.mostSeats) of 2")
        await gateway.close()
    }
}
