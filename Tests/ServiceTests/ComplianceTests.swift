import Foundation
import GRDB
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingTestSupport
import LicensingWire
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing
import UsageService
import ValidationService

/// Issuance, validation and usage served in-process, each following the feeds it
/// follows in a stack: validation issuance's and usage's quota states, usage validation's
/// events. One manual clock for all; feeds polled every few milliseconds.
struct ComplianceStack {
    let issuance: RPCClient
    let validation: RPCClient
    let usage: RPCClient
    let clock: ManualLicenseClock
    let folder: TemporaryFolder
    /// Validations made through `validate`, which `closeTheMinute` waits to see in the log.
    let validations = SharedValue(0)

    static func run<T>(
        clock: ManualLicenseClock = ManualLicenseClock(1_800_000_000), rules: ComplianceRules = ComplianceRules(),
        expiryInterval: Duration? = nil, _ body: (ComplianceStack) async throws -> T
    ) async throws -> T {
        let folder = TemporaryFolder()
        let logger = Logger(label: "test")
        let issuanceService = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock, logger: logger)
        return try await withServer(issuanceService.router(), in: folder, name: "issuance") { issuance in
            _ = try await issuance.call(IssuanceMethods.createSigningKey, CreateSigningKeyRequest())
            let usageServer = InProcessServer("usage", executor: testServerExecutor, logger: logger)
            let validationServer = InProcessServer("validation", executor: testServerExecutor, logger: logger)
            var validationOptions = ValidationService.Options()
            validationOptions.feedPollInterval = .milliseconds(20)
            validationOptions.rollupInterval = .milliseconds(20)
            let validationService = try ValidationService(
                database: try ValidationService.openDatabase(path: "\(folder.path)/validation.sqlite"),
                issuance: RPCClient(endpoint: issuance.endpoint), usage: RPCClient(endpoint: .inProcess(usageServer)),
                keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock, options: validationOptions, logger: logger)
            var usageOptions = UsageService.Options()
            usageOptions.followInterval = .milliseconds(20)
            usageOptions.feedInterval = .milliseconds(20)
            usageOptions.rules = rules
            let usageService = UsageService(
                database: try UsageService.openDatabase(path: "\(folder.path)/usage.sqlite"), validation: RPCClient(endpoint: .inProcess(validationServer)),
                clock: clock, options: usageOptions, logger: logger)
            validationServer.serve(validationService.router())
            usageServer.serve(usageService.router())
            let parts = validationService.backgroundServices()
                + (try usageService.services(configuration: RPCServerConfiguration(endpoints: [])))
                + (expiryInterval.map { [issuanceService.expiryScheduler(interval: $0)] } ?? [])
            return try await whileRunning(parts) {
                let stack = ComplianceStack(
                    issuance: issuance, validation: RPCClient(endpoint: .inProcess(validationServer)),
                    usage: RPCClient(endpoint: .inProcess(usageServer)), clock: clock, folder: folder)
                return try await body(stack)
            }
        }
    }

    func issue(
        features: [String] = ["export", "render"], maxMachines: UInt32 = 0, maxSeats: UInt32 = 0, deniedRegions: [String] = [], overage: UInt32 = 1000
    ) async throws -> (policy: String, license: License, key: String) {
        let (policy, customer) = try await seedCatalogue(
            issuance, features: features, maxMachines: maxMachines, maxSeats: maxSeats, overage: overage, deniedRegions: deniedRegions)
        let issued = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
        return (policy, issued.license!, issued.licenseKey)
    }

    func validate(_ key: String, feature: String = "", fingerprint: String = "", region: String = "") async throws -> ValidateResponse {
        validations.withLock { $0 += 1 }
        return try await validation.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: fingerprint, feature: feature, region: region))
    }

    func alerts(_ license: String, rule: String = "", all: Bool = false) async throws -> [ComplianceAlert] {
        try await usage.call(UsageMethods.listAlerts, ListAlertsRequest(licenseId: license, includeAcknowledged: all, rule: rule)).alerts
    }

    /// Moves past the minute the validations so far fall in, so validation rolls it up —
    /// once the validation log (written every few milliseconds) holds them: the rollup
    /// waits 10 s of clock time for late log writes, which a jump of the test's clock skips.
    func closeTheMinute() async throws {
        let expected = validations.withLock { $0 }
        let log = try DatabaseQueue(path: "\(folder.path)/validation.sqlite")
        let logged = try await eventually(within: .seconds(20)) {
            try await log.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM validation_log") ?? 0 } >= expected
        }
        try log.close()
        #expect(logged, "the validation log did not reach \(expected) rows")
        clock.advance(by: 60 + 15)
    }

    func record(_ key: String, feature: String, quantity: UInt64, id: String) async throws -> RecordUsageResponse {
        try await usage.call(UsageMethods.recordUsage, RecordUsageRequest(events: [UsageEvent(eventId: id, licenseKey: key, feature: feature, quantity: quantity)]))
    }
}

@Suite struct ValidationEventFeedTests {
    @Test func machinesSeatsAndRolledUpOutcomesGoOutOnOneFeedContract() async throws {
        try await ComplianceStack.run { stack in
            let (_, license, key) = try await stack.issue(maxMachines: 3, maxSeats: 1)
            for fingerprint in ["pc-1", "pc-2"] {
                _ = try await stack.validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: fingerprint))
            }
            _ = try await stack.validation.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "pc-2"))
            let lease = try await stack.validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "a"))
            #expect(lease.reason == .valid)
            #expect(try await stack.validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "b")).reason == .seatLimit)
            _ = try await stack.validation.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease.lease!.leaseId))
            for (fingerprint, region) in [("pc-1", "DE"), ("pc-1", "DE"), ("pc-9", "FR")] {
                #expect(try await stack.validate(key, fingerprint: fingerprint, region: region).valid)
            }
            try await stack.closeTheMinute()

            var events: [ValidationEvent] = []
            var epoch = ""
            let rolledUp = try await eventually {
                let page = try await stack.validation.call(ValidationMethods.events, FeedRequest())
                (events, epoch) = (page.events, page.epoch)
                return events.contains { if case .outcome = $0.event { true } else { false } }
            }
            #expect(rolledUp)
            #expect(!epoch.isEmpty)
            #expect(events.map(\.seq) == events.map(\.seq).sorted() && Set(events.map(\.seq)).count == events.count)
            #expect(events.allSatisfy { $0.licenseId == license.id && $0.tenantId == license.tenantId })
            let machines = events.compactMap { if case .machine(let machine)? = $0.event { machine } else { nil } }
            #expect(machines.map(\.activated) == [true, true, false])
            #expect(machines.map(\.machinesActive) == [1, 2, 1])
            #expect(machines.allSatisfy { $0.fingerprintHash.count == 64 && $0.maxMachines == 3 })
            let seats = events.compactMap { if case .seat(let seat)? = $0.event { seat } else { nil } }
            #expect(seats.map(\.action) == [.checkout, .refused, .checkin])
            #expect(seats.map(\.seatsHeld) == [1, 1, 0])
            let rollups = events.compactMap { if case .outcome(let rollup)? = $0.event { rollup } else { nil } }
            #expect(rollups.count == 1)
            #expect(rollups.first?.reason == .valid)
            #expect(rollups.first?.count == 3)
            #expect(rollups.first?.distinctFingerprints == 2)
            #expect(rollups.first?.countries == ["DE", "FR"])
            #expect(rollups.first?.machineAllowance == 3)
            #expect((rollups.first?.minute ?? 1) % 60 == 0)

            // A follower may ask for some kinds only, and resumes after what the filter skipped.
            let onlyMachines = try await stack.validation.call(ValidationMethods.events, FeedRequest(kinds: ["machine"]))
            #expect(onlyMachines.events.count == 3)
            #expect(onlyMachines.nextAfterSeq == events.last!.seq)
            #expect(onlyMachines.epoch == epoch)
            // Pages: two at a time, from where the last one ended.
            let first = try await stack.validation.call(ValidationMethods.events, FeedRequest(limit: 2))
            let second = try await stack.validation.call(ValidationMethods.events, FeedRequest(afterSeq: first.nextAfterSeq, limit: 2))
            #expect((first.events + second.events).map(\.seq) == Array(events.prefix(4)).map(\.seq))
            // A minute is published once: closing more minutes adds no second rollup of it.
            try await stack.closeTheMinute()
            try await Task.sleep(for: .milliseconds(200))
            let again = try await stack.validation.call(ValidationMethods.events, FeedRequest(kinds: ["outcome"]))
            #expect(again.events.count == 1)
        }
    }
}

@Suite struct QuotaTests {
    @Test func aQuotaPastItsLimitReachesValidationAndClearsWhenRaisedOrWhenThePeriodEnds() async throws {
        // Start on a day's first hour, so the day does not end mid-test.
        try await ComplianceStack.run(clock: ManualLicenseClock(1_800_000_000 / 86400 * 86400 + 3600)) { stack in
            let (_, license, key) = try await stack.issue()
            let quota = try await stack.usage.call(UsageMethods.setQuota, SetQuotaRequest(licenseId: license.id, feature: "export", limit: 10, period: "day"))
            #expect(quota.limit == 10 && quota.used == 0 && !quota.exceeded)
            #expect(quota.periodEndsAt == stack.clock.now / 86400 * 86400 + 86400)
            _ = try await stack.record(key, feature: "export", quantity: 10, id: "a")
            // At the limit is allowed; past it is not.
            try await Task.sleep(for: .milliseconds(150))
            #expect(try await stack.validate(key, feature: "export").reason == .valid)
            let past = try await stack.record(key, feature: "export", quantity: 1, id: "b")
            #expect(past.alerts.map(\.rule) == ["quota-exceeded"])
            var answer = ValidateResponse()
            #expect(try await eventually { answer = try await stack.validate(key, feature: "export"); return answer.reason == .quotaExceeded })
            #expect(!answer.valid)
            #expect(answer.detail.contains("11 of its 10-per-day quota") && answer.detail.contains("resets at"), "\(answer.detail)")
            // Other features, and the license itself, are not blocked.
            #expect(try await stack.validate(key, feature: "render").reason == .valid)
            #expect(try await stack.validate(key).reason == .valid)
            let usage = try await stack.usage.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.id))
            #expect(usage.features.first { $0.feature == "export" }.map { ($0.quota, $0.quotaUsed, $0.quotaExceeded) } ?? (0, 0, false) == (10, 11, true))

            // Raising the limit is a grant: the next validation sees it (validation catches up
            // with usage's feed before it denies).
            _ = try await stack.usage.call(UsageMethods.setQuota, SetQuotaRequest(licenseId: license.id, feature: "export", limit: 100, period: "day"))
            #expect(try await stack.validate(key, feature: "export").reason == .valid)
            // Lowering it blocks again; the next day the quota starts over.
            let lowered = try await stack.usage.call(UsageMethods.setQuota, SetQuotaRequest(licenseId: license.id, feature: "export", limit: 5, period: "day"))
            #expect(lowered.exceeded && lowered.used == 11)
            #expect(try await eventually { try await stack.validate(key, feature: "export").reason == .quotaExceeded })
            stack.clock.advance(by: 86400)
            #expect(try await stack.validate(key, feature: "export").reason == .valid)
            let list = try await stack.usage.call(UsageMethods.listQuotas, ListQuotasRequest(licenseId: license.id))
            #expect(list.quotas.map { ($0.feature, $0.limit, $0.used, $0.exceeded) }.first ?? ("", 0, 0, true) == ("export", 5, 0, false))
        }
    }

    @Test func aPolicyDefaultAppliesToItsLicensesWithTheirOverage() async throws {
        try await ComplianceStack.run(clock: ManualLicenseClock(1_800_000_000 / 86400 * 86400 + 3600)) { stack in
            // Overage 1.5: a 10-per-month quota blocks past 15.
            let (policy, license, key) = try await stack.issue(overage: 1500)
            _ = try await stack.record(key, feature: "export", quantity: 15, id: "first")
            _ = try await stack.usage.call(UsageMethods.setQuota, SetQuotaRequest(feature: "export", limit: 10, period: "month", policyId: policy))
            let quotas = try await stack.usage.call(UsageMethods.listQuotas, ListQuotasRequest(licenseId: license.id)).quotas
            #expect(quotas.map { ($0.policyId, $0.used, $0.exceeded, $0.overagePermille) }.first ?? ("", 0, true, 0) == (policy, 15, false, 1500))
            _ = try await stack.record(key, feature: "export", quantity: 1, id: "second")
            #expect(try await eventually { try await stack.validate(key, feature: "export").reason == .quotaExceeded })
            // A license's own quota wins over its policy's.
            _ = try await stack.usage.call(UsageMethods.setQuota, SetQuotaRequest(licenseId: license.id, feature: "export", limit: 1000, period: "total"))
            #expect(try await stack.validate(key, feature: "export").reason == .valid)
        }
    }

    @Test func badQuotaRequestsGetClearErrors() async throws {
        try await ComplianceStack.run { stack in
            let (policy, license, _) = try await stack.issue()
            let cases: [(StatusCode, SetQuotaRequest, String)] = [
                (.invalidArgument, SetQuotaRequest(feature: "export", limit: 1), "give one of license_id"),
                (.invalidArgument, SetQuotaRequest(licenseId: license.id, feature: "export", limit: 1, policyId: policy), "give one of license_id"),
                (.invalidArgument, SetQuotaRequest(licenseId: license.id, limit: 1), "feature is required"),
                (.invalidArgument, SetQuotaRequest(licenseId: license.id, feature: "export", limit: 1, period: "week"), "day, month or total"),
                (.notFound, SetQuotaRequest(licenseId: "lic_nope", feature: "export", limit: 1), "no license lic_nope"),
            ]
            for (code, request, message) in cases {
                do {
                    _ = try await stack.usage.call(UsageMethods.setQuota, request)
                    Issue.record("\(request) was accepted")
                } catch let error as RPCError {
                    #expect(error.code == code && error.message.contains(message), "\(error)")
                }
            }
        }
    }
}

@Suite struct ComplianceRuleTests {
    static let rules: ComplianceRules = {
        var rules = ComplianceRules()
        rules.seatLimitHitsPerHour = 2
        rules.machineChangesPerDay = 3
        rules.extraFingerprintsPerDay = 0
        rules.countriesPerDay = 2
        rules.deniedRegionAttemptsPerDay = 2
        rules.useAfterEndPerDay = 1
        return rules
    }()

    /// Each rule on a license pushed past its threshold, and on one kept at it.
    @Test func eachRuleFiresAboveItsThresholdAndNotAtIt() async throws {
        try await ComplianceStack.run(rules: Self.rules) { stack in
            // Machine churn: 4 activations and deactivations in a day > 3; 3 is not.
            let churned = try await stack.issue(maxMachines: 5)
            let calm = try await stack.issue(maxMachines: 5)
            for (key, changes) in [(churned.key, 4), (calm.key, 3)] {
                for change in 0..<changes {
                    if change % 2 == 0 {
                        _ = try await stack.validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "m"))
                    } else {
                        _ = try await stack.validation.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "m"))
                    }
                }
            }
            // Seats: three refused checkouts in an hour > 2; two are not.
            let crowded = try await stack.issue(maxSeats: 1)
            let roomy = try await stack.issue(maxSeats: 1)
            for (key, refused) in [(crowded.key, 3), (roomy.key, 2)] {
                _ = try await stack.validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "holder"))
                for index in 0..<refused {
                    let answer = try await stack.validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "c\(index)", queue: index == 0))
                    #expect(answer.reason == .seatLimit)
                }
            }
            // Sharing: validated from 3 machines, the license allows 2; 2 is fine.
            let shared = try await stack.issue(maxMachines: 2)
            let single = try await stack.issue(maxMachines: 2)
            for (key, machines) in [(shared.key, 3), (single.key, 2)] {
                for machine in 0..<machines { _ = try await stack.validate(key, fingerprint: "host-\(machine)") }
            }
            // Countries: 3 in a day > 2.
            let travelling = try await stack.issue()
            let local = try await stack.issue()
            for (key, countries) in [(travelling.key, ["DE", "FR", "JP"]), (local.key, ["DE", "FR"])] {
                for country in countries { _ = try await stack.validate(key, region: country) }
            }
            // Denied regions: 2 attempts reach the threshold of 2; 1 does not.
            let embargoed = try await stack.issue(deniedRegions: ["KP"])
            let tried = try await stack.issue(deniedRegions: ["KP"])
            for (key, attempts) in [(embargoed.key, 2), (tried.key, 1)] {
                for _ in 0..<attempts { #expect(try await stack.validate(key, region: "KP").reason == .regionNotAllowed) }
            }
            // Use after the end of rights: one validation of a revoked key is enough.
            let revoked = try await stack.issue()
            let kept = try await stack.issue()
            _ = try await stack.issuance.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: revoked.license.id, reason: "chargeback"))
            // A revocation reaches validation within the feed's interval.
            #expect(try await eventually { try await stack.validate(revoked.key).reason == .revoked })
            #expect(try await stack.validate(kept.key).reason == .valid)
            // Clock rollback, reported by an offline verifier.
            let tampered = try await stack.issue()
            let report = try await stack.usage.call(
                UsageMethods.reportTamper, TamperReport(licenseKey: tampered.key, kind: "clock-rollback", detail: "clock is 3 days behind the last check", observedAt: stack.clock.now))
            #expect(report.alert?.rule == "clock-tamper")
            try await stack.closeTheMinute()

            let expected: [(String, String)] = [
                (churned.license.id, "machine-churn"), (crowded.license.id, "seat-overuse"), (shared.license.id, "fingerprint-sharing"),
                (travelling.license.id, "country-sharing"), (embargoed.license.id, "denied-region"), (revoked.license.id, "use-after-end"),
                (tampered.license.id, "clock-tamper"),
            ]
            for (license, rule) in expected {
                #expect(try await eventually { try await stack.alerts(license).map(\.rule) == [rule] }, "\(rule) on \(license)")
            }
            for license in [calm, roomy, single, local, tried, kept].map(\.license.id) {
                #expect(try await stack.alerts(license).isEmpty, "no alert on \(license)")
            }
            let sharing = try await stack.alerts(shared.license.id).first!
            #expect(sharing.detail.contains("3 distinct machines") && sharing.detail.contains("allows 2"), "\(sharing.detail)")
            #expect(sharing.reason == .machineLimit && sharing.tenantId == shared.license.tenantId)
            let countries = try await stack.alerts(travelling.license.id).first!
            #expect(countries.detail.contains("3 countries") && countries.detail.contains("DE, FR, JP"), "\(countries.detail)")
            // Filters: by rule across licenses.
            let churn = try await stack.usage.call(UsageMethods.listAlerts, ListAlertsRequest(rule: "machine-churn")).alerts
            #expect(churn.map(\.licenseId) == [churned.license.id])
            // Concurrency peaks come from the same feed.
            #expect(try await eventually {
                try await stack.usage.call(UsageMethods.getUsage, GetUsageRequest(licenseId: crowded.license.id)).peakConcurrent == 1
            })
            #expect(try await stack.usage.call(UsageMethods.getUsage, GetUsageRequest(licenseId: churned.license.id)).peakMachines == 1)
        }
    }

    /// 10,000 validations of a revoked key make one open alert counting 10,000; once it is
    /// acknowledged (who and when recorded), the next trigger opens a new one.
    @Test func aStormOfTriggersIsOneOpenAlertUntilAcknowledged() async throws {
        try await ComplianceStack.run(rules: Self.rules) { stack in
            let (_, license, key) = try await stack.issue()
            _ = try await stack.issuance.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: license.id))
            #expect(try await eventually { try await stack.validate(key).reason == .revoked })
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<20 {
                    group.addTask {
                        for call in 0..<500 where worker + call > 0 { _ = try await stack.validate(key, fingerprint: "w\(worker)") }
                    }
                }
                try await group.waitForAll()
            }
            try await stack.closeTheMinute()
            var alerts: [ComplianceAlert] = []
            #expect(try await eventually { alerts = try await stack.alerts(license.id); return alerts.first?.count == 10_000 }, "\(alerts)")
            #expect(alerts.count == 1)
            #expect(alerts.first?.detail.contains("10000 validations") == true, "\(alerts.first?.detail ?? "")")
            #expect(alerts.first?.reason == .revoked)

            let acknowledged = try await stack.usage.call(UsageMethods.acknowledgeAlert, GetByIdRequest(id: alerts[0].id))
            #expect(acknowledged.acknowledged && acknowledged.acknowledgedAt == stack.clock.now && !acknowledged.acknowledgedBy.isEmpty)
            #expect(try await stack.alerts(license.id).isEmpty)
            let again = try await stack.usage.call(UsageMethods.acknowledgeAlert, GetByIdRequest(id: alerts[0].id))
            #expect(again.acknowledgedAt == acknowledged.acknowledgedAt)

            _ = try await stack.validate(key)
            try await stack.closeTheMinute()
            #expect(try await eventually { try await stack.alerts(license.id).map(\.count) == [1] })
            let everything = try await stack.alerts(license.id, all: true)
            #expect(everything.count == 2 && everything.filter(\.acknowledged).map(\.id) == [alerts[0].id])
            let onlyAcknowledged = try await stack.usage.call(UsageMethods.listAlerts, ListAlertsRequest(licenseId: license.id, acknowledgedOnly: true)).alerts
            #expect(onlyAcknowledged.map(\.id) == [alerts[0].id])

            // Alerts go out on usage's feed for reporting and notifications.
            #expect(try await eventually {
                let feed = try await stack.usage.call(UsageMethods.feed, FeedRequest(kinds: ["alert"]))
                return feed.events.contains { if case .alert(let alert)? = $0.event { alert.acknowledged } else { false } }
            })
            for (request, message) in [
                (ListAlertsRequest(rule: "sharing"), "no rule"),
            ] {
                do {
                    _ = try await stack.usage.call(UsageMethods.listAlerts, request)
                    Issue.record("accepted")
                } catch let error as RPCError {
                    #expect(error.code == .invalidArgument && error.message.contains(message))
                }
            }
            #expect(await expectCode(.notFound) { _ = try await stack.usage.call(UsageMethods.acknowledgeAlert, GetByIdRequest(id: "alert_none")) } == nil)
            #expect(await expectCode(.notFound) {
                _ = try await stack.usage.call(UsageMethods.reportTamper, TamperReport(licenseKey: LicenseKey.generate().description))
            } == nil)
            #expect(await expectCode(.invalidArgument) {
                _ = try await stack.usage.call(UsageMethods.reportTamper, TamperReport(licenseKey: key, kind: "rolled back!"))
            } == nil)
        }
    }
}

@Suite struct UsageRetentionTests {
    /// Under a steady load, raw events past the retention are removed and the table stays
    /// bounded, while the daily rollups (and so the feed's totals) stay.
    @Test func rawEventsStayBoundedAndDailyRollupsStay() async throws {
        let clock = ManualLicenseClock(1_800_000_000 / 86400 * 86400)
        try await ComplianceStack.run(clock: clock) { stack in
            let (_, license, key) = try await stack.issue()
            var configuration = Configuration()
            configuration.busyMode = .timeout(10)
            let database = try DatabasePool(path: "\(stack.folder.path)/usage.sqlite", configuration: configuration)
            let retention = Retention(pool: database, table: "usage_event", timeColumn: "received_at", keep: 2 * 86400, batch: 7, clock: { clock.now }, logger: Logger(label: "test"))
            var sizes: [Int] = []
            for day in 0..<8 {
                let events = (0..<20).map { UsageEvent(eventId: "d\(day)-\($0)", licenseKey: key, feature: "export", quantity: 1) }
                _ = try await stack.usage.call(UsageMethods.recordUsage, RecordUsageRequest(events: events))
                try await retention.sweep()
                sizes.append(try await database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM usage_event") ?? 0 })
                clock.advance(by: 86400)
            }
            // Two days kept, plus the day being written.
            #expect(sizes.max()! <= 60, "\(sizes)")
            #expect(sizes.suffix(5).allSatisfy { $0 == 60 }, "\(sizes)")
            let days = try await database.read {
                try Row.fetchAll($0, sql: "SELECT quantity FROM usage_daily WHERE license_id = ? ORDER BY day", arguments: [license.id]).map { $0[0] as Int64 }
            }
            #expect(days == Array(repeating: 20, count: 8))
            #expect(try await eventually {
                let feed = try await stack.usage.call(UsageMethods.feed, FeedRequest(limit: 5000, kinds: ["usage"]))
                let latest = Dictionary(feed.events.compactMap { event -> (Int64, UInt64)? in
                    if case .usage(let daily)? = event.event { (daily.day, daily.quantity) } else { nil }
                }, uniquingKeysWith: { $1 })
                return latest.count == 8 && latest.values.allSatisfy { $0 == 20 }
            })
        }
    }
}
