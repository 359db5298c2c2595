import Foundation
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingTestSupport
import LicensingWire
import Logging
import ReportingService
import ServiceLifecycle
import Testing

/// license-reporting beside issuance, validation and usage, following their feeds.
struct ReportingStack {
    let stack: ComplianceStack
    let reporting: RPCClient
    let service: ReportingService

    static func run<T>(clock: ManualLicenseClock, _ body: (ReportingStack) async throws -> T) async throws -> T {
        try await ComplianceStack.run(clock: clock) { stack in
            let (service, parts, endpoint) = try start(stack, name: "reporting")
            let running = runInBackground(parts)
            defer { running.cancel() }
            let client = RPCClient(endpoint: endpoint)
            let result = try await body(ReportingStack(stack: stack, reporting: client, service: service))
            await client.close()
            return result
        }
    }

    /// A reporting service on its own (empty) database, following the stack's feeds.
    static func start(_ stack: ComplianceStack, name: String) throws -> (ReportingService, [any Service], Endpoint) {
        var options = ReportingService.Options()
        options.followInterval = .milliseconds(20)
        let folder = stack.folder.path
        let service = ReportingService(
            database: try ReportingService.openDatabase(path: "\(folder)/\(name).sqlite"), issuance: RPCClient(endpoint: stack.issuance.endpoint),
            validation: RPCClient(endpoint: stack.validation.endpoint), usage: RPCClient(endpoint: stack.usage.endpoint),
            clock: stack.clock, options: options, logger: Logger(label: "test.\(name)"))
        let endpoint = Endpoint.inProcess(InProcessServer(name, router: service.router(), executor: testServerExecutor))
        return (service, try service.services(configuration: RPCServerConfiguration(endpoints: [endpoint])), endpoint)
    }
}

@Suite struct ReportingTests {
    /// A scripted history; each report is compared with totals the test keeps from what it
    /// sent and what the services answered, never with the reporting code's own output.
    @Test func everyReportAgreesWithTotalsKeptFromTheInputs() async throws {
        let start: Int64 = 1_800_000_000 / 86400 * 86400 + 3600
        try await ReportingStack.run(clock: ManualLicenseClock(start)) { world in
            let stack = world.stack
            let issuance = stack.issuance
            // Product A: 30-day subscriptions; product B: perpetual.
            let (policyA, customer1) = try await seedCatalogue(
                issuance, type: .subscription, duration: 30 * 86400, grace: 7 * 86400, features: ["export", "render"], maxMachines: 2, maxSeats: 2)
            let productA = try await issuance.call(IssuanceMethods.getPolicy, GetByIdRequest(id: policyA)).productId
            let (policyB, _) = try await seedCatalogue(issuance, features: ["export"])
            let productB = try await issuance.call(IssuanceMethods.getPolicy, GetByIdRequest(id: policyB)).productId
            let customer2 = try await issuance.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Globex", email: "it@globex.test")).id
            func issue(_ policy: String, _ customer: String, billing: String = "", amount: Int64 = 0, currency: String = "") async throws -> (String, String) {
                let issued = try await issuance.call(
                    IssuanceMethods.issueLicense,
                    IssueLicenseRequest(policyId: policy, customerId: customer, billingRef: billing, amountMinor: amount, currency: currency))
                return (issued.license!.id, issued.licenseKey)
            }
            let (a1, keyA1) = try await issue(policyA, customer1, billing: "b-1", amount: 1000, currency: "EUR")
            let (a2, keyA2) = try await issue(policyA, customer2, billing: "b-2", amount: 2500, currency: "USD")
            let (b1, keyB1) = try await issue(policyB, customer1)

            // Payments: two for a1 (one a renewal), one for a2, then a2's next one fails.
            for (billing, amount, currency, id) in [("b-1", Int64(1000), "EUR", "p1"), ("b-1", 1000, "EUR", "p2"), ("b-2", 2500, "USD", "p3")] {
                _ = try await issuance.call(
                    IssuanceMethods.recordPayment,
                    RecordPaymentRequest(billingRef: billing, periodStart: start, periodEnd: start + 30 * 86400, amountMinor: amount, currency: currency, paymentId: id))
            }
            _ = try await issuance.call(IssuanceMethods.recordPaymentFailure, RecordPaymentFailureRequest(billingRef: "b-2", reason: "card declined"))

            // Validations, tallied by the answers the products got.
            var answers: [String: [ReasonCode: UInt64]] = [:]
            func validate(_ license: String, _ key: String, _ fingerprint: String) async throws {
                let answer = try await stack.validate(key, fingerprint: fingerprint)
                answers[license, default: [:]][answer.reason, default: 0] += 1
            }
            for fingerprint in ["f1", "f2", "f1", "f2"] { try await validate(a1, keyA1, fingerprint) }
            for _ in 0..<2 { try await validate(a2, keyA2, "g1") }
            _ = try await issuance.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: b1, reason: "chargeback"))
            // The revocation reaches validation within the feed's interval; every answer counts.
            #expect(try await eventually {
                let answer = try await stack.validate(keyB1)
                answers[b1, default: [:]][answer.reason, default: 0] += 1
                return answer.reason == .revoked
            })
            for _ in 0..<3 { try await validate(b1, keyB1, "h1") }
            // A machine and two seats on a1.
            _ = try await stack.validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: keyA1, fingerprint: "f1"))
            for client in ["s1", "s2"] {
                #expect(try await stack.validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: keyA1, clientId: client)).reason == .valid)
            }
            // Usage: a2 passes a daily quota of 5.
            let used: [(String, String, String, UInt64)] = [(a1, keyA1, "export", 10), (a1, keyA1, "export", 5), (a1, keyA1, "render", 3), (a2, keyA2, "export", 7)]
            _ = try await stack.usage.call(UsageMethods.setQuota, SetQuotaRequest(licenseId: a2, feature: "export", limit: 5, period: "day"))
            for (index, (_, key, feature, quantity)) in used.enumerated() {
                #expect(try await stack.record(key, feature: feature, quantity: quantity, id: "u\(index)").accepted == 1)
            }
            try await stack.closeTheMinute()

            // Reporting catches up with all three feeds.
            let validations = answers.values.reduce(0) { $0 + $1.values.reduce(0, +) }
            var usage = UsageReportResponse()
            let caughtUp = try await eventually {
                usage = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest())
                return usage.validations.reduce(0) { $0 + $1.count } == validations && usage.rows.contains { $0.licenseId == a2 && $0.overLimit }
                    && usage.rows.contains { $0.licenseId == a1 && $0.peakConcurrent == 2 }
            }
            #expect(caughtUp, "\(usage)")

            // Usage: quantities per license and feature as recorded; validations as answered.
            let expectedQuantities = Dictionary(used.map { ("\($0.0)/\($0.2)", $0.3) }, uniquingKeysWith: +)
            let reported = Dictionary(usage.rows.filter { !$0.feature.isEmpty }.map { ("\($0.licenseId)/\($0.feature)", $0.quantity) }, uniquingKeysWith: +)
            #expect(reported == expectedQuantities)
            for row in usage.rows {
                let tally = answers[row.licenseId] ?? [:]
                #expect(row.validationsValid == (tally[.valid] ?? 0) + (tally[.inGrace] ?? 0), "\(row)")
                #expect(row.validationsDenied == tally.filter { $0.key != .valid && $0.key != .inGrace }.values.reduce(0, +), "\(row)")
            }
            let rowA1 = try #require(usage.rows.first { $0.licenseId == a1 })
            #expect(rowA1.activeMachines == 1 && rowA1.peakMachines == 1 && rowA1.maxMachines == 2 && rowA1.peakConcurrent == 2 && rowA1.limit == 2)
            #expect(rowA1.customerName == "Acme" && rowA1.productId == productA)
            #expect(usage.rows.filter(\.overLimit).map(\.licenseId) == [a2])
            #expect(usage.activeLicenses == 3 && usage.overLimit == 1)
            #expect(usage.rows.first { $0.licenseId == b1 }?.feature == "")
            let byOutcome = Dictionary(usage.validations.map { ($0.reason, $0.count) }, uniquingKeysWith: +)
            var expectedOutcomes: [ReasonCode: UInt64] = [:]
            for tally in answers.values { for (reason, count) in tally { expectedOutcomes[reason, default: 0] += count } }
            #expect(byOutcome == expectedOutcomes)
            // Filters.
            let onlyA = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest(productId: productA))
            #expect(Set(onlyA.rows.map(\.licenseId)) == [a1, a2] && onlyA.activeLicenses == 2)
            let onlyCustomer1 = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest(customerId: customer1))
            #expect(Set(onlyCustomer1.rows.map(\.licenseId)) == [a1, b1])
            let paged = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest(page: PageRequest(pageSize: 1)))
            #expect(paged.rows.map(\.licenseId).count >= 1 && Set(paged.rows.map(\.licenseId)).count == 1 && !paged.nextPageToken.isEmpty)
            let before = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest(from: start - 10 * 86400, to: start - 86400))
            #expect(before.rows.isEmpty && before.activeLicenses == 0)

            // Compliance: b1 used after revocation, a2 past its quota; a1 complies.
            var compliance = ComplianceReportResponse()
            #expect(try await eventually {
                compliance = try await world.reporting.call(ReportingMethods.complianceReport, ReportRequest())
                return Set(compliance.violations.map(\.licenseId)) == [a2, b1] && compliance.byRule.count == 2
            }, "\(compliance)")
            #expect(compliance.compliantLicenses == 1 && compliance.violatingLicenses == 2)
            let b1Reasons = compliance.violations.first { $0.licenseId == b1 }?.reasons ?? []
            #expect(b1Reasons.contains("alerts: use-after-end"), "\(b1Reasons)")
            #expect(b1Reasons.contains("\(answers[b1]![.revoked]!) validations after the end of rights (expired, suspended or revoked)"), "\(b1Reasons)")
            #expect(compliance.violations.first { $0.licenseId == a2 }?.reasons == ["alerts: quota-exceeded"])
            #expect(Set(compliance.byRule.map(\.rule)) == ["use-after-end", "quota-exceeded"])
            #expect(compliance.auditChainIntact && compliance.auditRows > 0)
            #expect(compliance.header?.producedAt == stack.clock.now && compliance.header?.from ?? 0 < compliance.header?.to ?? 0)
            var states: [LicenseState: UInt32] = [:]
            for id in [a1, a2, b1] { states[try await issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).state, default: 0] += 1 }
            #expect(Dictionary(compliance.licenseStates.map { ($0.state, $0.licenses) }, uniquingKeysWith: +) == states)

            // Revenue: exact sums per currency in minor units.
            let revenue = try await world.reporting.call(ReportingMethods.revenueReport, ReportRequest())
            let month = String(ISODate.format(stack.clock.now).prefix(7))
            #expect(revenue.rows.map { "\($0.month) \($0.productId) \($0.currency) \($0.amountMinor) \($0.payments)" }.sorted()
                == ["\(month) \(productA) EUR 2000 2", "\(month) \(productA) USD 2500 1"])
            // Only a1's subscription is active (a2's is past due): 1000 per 30 days.
            #expect(revenue.recurring.map { "\($0.currency) \($0.mrrMinor) \($0.arrMinor) \($0.subscriptions)" }
                == ["EUR \(1000 * 2_629_746 / (30 * 86400)) \(1000 * 2_629_746 / (30 * 86400) * 12) 1"])
            #expect(revenue.movements.map { "\($0.month) \($0.started) \($0.renewals) \($0.churned) \($0.failedPayments)" } == ["\(month) 2 1 0 1"])

            // Renewal pipeline: what ends within the window, soonest first; none within 10 days.
            let pipeline = try await world.reporting.call(ReportingMethods.renewalPipeline, ReportRequest(days: 31))
            let expected = try await [a1, a2].asyncMap { try await issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(id: $0)) }
                .filter { $0.state == .active || $0.state == .inGrace }
                .sorted { ($0.expiresAt, $0.id) < ($1.expiresAt, $1.id) }
            #expect(pipeline.rows.map(\.licenseId) == expected.map(\.id))
            #expect(pipeline.rows.map(\.expiresAt) == expected.map(\.expiresAt))
            #expect(pipeline.rows.first { $0.licenseId == a1 }.map { ($0.autoRenew, $0.lastAmountMinor, $0.currency, $0.inGrace) } ?? (false, 0, "", true) == (true, 1000, "EUR", false))
            #expect(try await world.reporting.call(ReportingMethods.renewalPipeline, ReportRequest(days: 10)).rows.isEmpty)
            #expect(await expectCode(.invalidArgument) { _ = try await world.reporting.call(ReportingMethods.renewalPipeline, ReportRequest(days: 5000)) } == nil)

            // Export: the same rows as CSV, a header first.
            var csv: [UInt8] = []
            for try await chunk in try await world.reporting.stream(ReportingMethods.export, ExportRequest(report: "usage", format: "csv")) { csv += chunk.data }
            let lines = String(decoding: csv, as: UTF8.self).split(separator: "\r\n").map(String.init)
            #expect(lines.first?.hasPrefix("license_id,product_id,customer_id,customer_name,feature,quantity") == true)
            #expect(lines.count == usage.rows.count + 1)
            var jsonl: [UInt8] = []
            for try await chunk in try await world.reporting.stream(ReportingMethods.export, ExportRequest(report: "revenue", format: "jsonl")) { jsonl += chunk.data }
            let objects = String(decoding: jsonl, as: UTF8.self).split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(objects.compactMap { $0["amount_minor"] as? Int }.sorted() == [2000, 2500])
            for bad in [ExportRequest(report: "sales", format: "csv"), ExportRequest(report: "usage", format: "xlsx")] {
                await #expect(throws: RPCError.self) {
                    for try await _ in try await world.reporting.stream(ReportingMethods.export, bad) {}
                }
            }

            // An erased customer shows as erased: names are asked for, not stored.
            _ = try await issuance.call(IssuanceMethods.eraseCustomer, EraseCustomerRequest(customerId: customer2))
            let afterErasure = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest(productId: productA))
            #expect(afterErasure.rows.first { $0.licenseId == a2 }?.customerName == "(erased)")

            // A rebuild from empty, from the feeds alone, gives the same reports.
            let (rebuilt, parts, endpoint) = try ReportingStack.start(stack, name: "rebuilt")
            let running = runInBackground(parts)
            defer { running.cancel() }
            _ = rebuilt
            let fresh = RPCClient(endpoint: endpoint)
            defer { Task { await fresh.close() } }
            func strip<T>(_ value: T, _ clear: (inout T) -> Void) -> T {
                var copy = value
                clear(&copy)
                return copy
            }
            let incremental = try await world.reporting.call(ReportingMethods.usageReport, ReportRequest())
            var again = UsageReportResponse()
            #expect(try await eventually {
                again = try await fresh.call(ReportingMethods.usageReport, ReportRequest())
                return strip(again) { $0.header = nil } == strip(incremental) { $0.header = nil }
            }, "rebuilt \(again) incremental \(incremental)")
            // Each feed is followed on its own: the rebuilt service has the usage feed's
            // alerts before, perhaps, issuance's licenses that name their customers' tenants.
            let compliance1 = try await world.reporting.call(ReportingMethods.complianceReport, ReportRequest())
            var compliance2 = ComplianceReportResponse()
            #expect(try await eventually {
                compliance2 = try await fresh.call(ReportingMethods.complianceReport, ReportRequest())
                return strip(compliance2) { $0.header = nil } == strip(compliance1) { $0.header = nil }
            }, "rebuilt \(compliance2) incremental \(compliance1)")
            #expect(strip(try await fresh.call(ReportingMethods.revenueReport, ReportRequest())) { $0.header = nil }
                == strip(try await world.reporting.call(ReportingMethods.revenueReport, ReportRequest())) { $0.header = nil })

            // Health shows where each feed stands.
            let health = try await world.reporting.call(HealthMethods.check, HealthCheckRequest())
            #expect(Set(health.feeds.map(\.feed)) == ["issuance", "validation", "usage"])
            #expect(health.feeds.allSatisfy { $0.appliedSeq == $0.sourceSeq && $0.appliedSeq > 0 })
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}

@Suite struct ReportExportTests {
    /// A client that stops reading an export stops the work on the server: it sends a few
    /// chunks, not the whole report, and the export ends.
    @Test func aCancelledExportStopsOnTheServer() async throws {
        let folder = TemporaryFolder()
        let database = try ReportingService.openDatabase(path: "\(folder.path)/reporting.sqlite")
        let writer = ReadModelWriter(database: database)
        // 8,000 licenses with 10 features each: the server needs far longer to produce the
        // 80,000 rows than a cancellation takes to reach it (the client reads ahead of its
        // consumer, so the server is not held back by the client's pace).
        let licenses = (0..<8_000).map { index in
            ChangeEvent(seq: UInt64(index + 1), action: "license.issued", subject: .license(License(
                id: String(format: "lic_%06d", index), productId: "prod_x", customerId: "cus_x", state: .active, issuedAt: 1_799_000_000,
                tenantId: "default")))
        }
        for page in stride(from: 0, to: licenses.count, by: 4000) { try await writer.apply(issuance: Array(licenses[page..<page + 4000])) }
        let usage = licenses.flatMap { event -> [UsageFeedEvent] in
            guard case .license(let license)? = event.subject else { return [] }
            return (0..<10).map { UsageFeedEvent(licenseId: license.id, event: .usage(DailyUsage(feature: "f\($0)", day: 1_799_971_200, quantity: 1, events: 1))) }
        }
        for page in stride(from: 0, to: usage.count, by: 5000) { try await writer.apply(usage: Array(usage[page..<page + 5000])) }
        let nowhere = RPCClient(endpoint: .unix(path: "\(folder.path)/absent.sock"), configuration: RPCClientConfiguration(connections: 1, connectTimeout: .milliseconds(50)))
        let service = ReportingService(
            database: database, issuance: nowhere, validation: nowhere, usage: nowhere, clock: ManualLicenseClock(1_800_000_000), logger: Logger(label: "test"))
        // Over a socket: the in-process transport buffers a stream without bound, so only a
        // socket's back-pressure holds the server to a client that stopped reading.
        try await withServer(service.router(), on: [.unix(path: folder.socket())]) { endpoints in
            let client = RPCClient(endpoint: endpoints[0])
            defer { Task { await client.close() } }
            let filter = ReportRequest(from: 1_799_900_000, to: 1_800_000_000)
            let total = 80_000
            let before = service.exports.rowsSent
            var chunks = 0
            for try await _ in try await client.stream(ReportingMethods.export, ExportRequest(report: "usage", format: "csv", filter: filter)) {
                chunks += 1
                if chunks == 2 { break }
            }
            #expect(try await eventually { service.exports.running == 0 })
            #expect(service.exports.rowsSent - before < total, "the cancelled export sent \(service.exports.rowsSent - before) of \(total) rows")
        }
        await nowhere.close()
    }
}
