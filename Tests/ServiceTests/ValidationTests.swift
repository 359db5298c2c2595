import Foundation
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import LicensingTestSupport
import Testing
import ValidationService

@Suite struct ValidationTests {
    /// Issuance and validation in-process, validation following issuance's feed.
    @Test func validationFollowsTheFeedAndAnswersEveryReason() async throws {
        let folder = TemporaryFolder()
        let clock = ManualLicenseClock(SystemLicenseClock().now)
        let issuance = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock, logger: Logger(label: "test"))
        try await withServer(issuance.router(), in: folder, name: "issuance") { issuanceClient in
            let validation = try ValidationService(
                database: try ValidationService.openDatabase(path: "\(folder.path)/validation.sqlite"),
                issuance: RPCClient(endpoint: issuanceClient.endpoint), keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock,
                logger: Logger(label: "test"))
            let parts = validation.backgroundServices()
            let server = InProcessServer("validation", router: validation.router(), executor: testServerExecutor)
            let running = runInBackground(parts)
            defer { running.cancel() }
            let client = RPCClient(endpoint: .inProcess(server))
            defer { Task { await client.close() } }

            let (policy, customer) = try await seedCatalogue(issuanceClient, duration: 3600, grace: 600, features: ["export"])
            let issued = try await issuanceClient.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let key = issued.licenseKey

            func validate(_ key: String, feature: String = "") async throws -> ValidateResponse {
                try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, feature: feature))
            }
            func eventually(_ key: String, _ reason: ReasonCode) async throws {
                let start = ContinuousClock.now
                while ContinuousClock.now - start < .seconds(15) {
                    if let answer = try? await validate(key), answer.reason == reason { return }
                    try await Task.sleep(for: .milliseconds(50))
                }
                Issue.record("validation did not answer \(reason) within 15 s")
            }

            // Read-your-writes: valid at once, without waiting for the next feed poll.
            let valid = try await validate(key)
            #expect(valid.reason == .valid)
            #expect(valid.valid)
            #expect(valid.licenseId == issued.license?.id)
            #expect(valid.features == ["export"])
            #expect(try await validate(key, feature: "render").reason == .featureNotEntitled)
            #expect(try await validate(LicenseKey.generate().description).reason == .notFound)
            let malformed = try await validate("1234-ABCD")
            #expect(malformed.reason == .malformedKey)
            #expect(!malformed.valid)

            clock.advance(by: 3600 + 1)
            #expect(try await validate(key).reason == .inGrace)
            clock.advance(by: 600)
            #expect(try await validate(key).reason == .expired)

            let second = try await issuanceClient.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            try await eventually(second.licenseKey, .valid)
            _ = try await issuanceClient.call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: second.license!.id))
            try await eventually(second.licenseKey, .suspended)
            _ = try await issuanceClient.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: second.license!.id))
            try await eventually(second.licenseKey, .revoked)

            let health = try await client.call(HealthMethods.check, HealthCheckRequest())
            let feed = try #require(health.feeds.first)
            #expect(feed.appliedSeq == feed.sourceSeq)
            #expect(feed.appliedSeq > 0)
        }
    }

    /// With the poll an hour away, only the catch-up on a miss can find a new key.
    @Test func aKeyIssuedAMomentAgoIsFoundAtOnce() async throws {
        let folder = TemporaryFolder()
        let issuance = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, logger: Logger(label: "test"))
        try await withServer(issuance.router(), in: folder, name: "issuance") { issuanceClient in
            let validation = try ValidationService(
                database: try ValidationService.openDatabase(path: "\(folder.path)/validation.sqlite"),
                issuance: RPCClient(endpoint: issuanceClient.endpoint), keyHashSecret: testSecret, masterKey: testMasterKey,
                options: { var options = ValidationService.Options(); options.feedPollInterval = .seconds(3600); return options }(),
                logger: Logger(label: "test"))
            let parts = validation.backgroundServices()
            let server = InProcessServer("validation", router: validation.router(), executor: testServerExecutor)
            let running = runInBackground(parts)
            defer { running.cancel() }
            let client = RPCClient(endpoint: .inProcess(server))
            defer { Task { await client.close() } }
            // Let the consumer make its first poll and fall asleep.
            _ = try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: LicenseKey.generate().description))

            let (policy, customer) = try await seedCatalogue(issuanceClient)
            let issued = try await issuanceClient.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let answer = try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey))
            #expect(answer.reason == .valid)
            #expect(answer.licenseId == issued.license?.id)
        }
    }

    /// Read-your-writes for activation: with the poll an hour away, a license reinstated a
    /// moment ago (and a machine limit raised a moment ago) activates at once, because a
    /// denial is given only after catching up with issuance.
    @Test func anActivationRightAfterAReinstatementOrARaisedLimitSucceeds() async throws {
        var options = ValidationService.Options()
        options.feedPollInterval = .seconds(3600)
        try await withIssuanceAndValidation(options: options) { issuanceClient, client in
            let (policy, customer) = try await seedCatalogue(issuanceClient, maxMachines: 1)
            let issued = try await issuanceClient.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let id = issued.license!.id
            _ = try await issuanceClient.call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: id, reason: "unpaid"))
            #expect(try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "pc-1")).reason == .suspended)
            _ = try await issuanceClient.call(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: id, reason: "paid"))
            #expect(try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "pc-1")).reason == .valid)
            #expect(try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "pc-2")).reason == .machineLimit)
            _ = try await issuanceClient.call(
                IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: id, maxMachines: 2))
            #expect(try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "pc-2")).reason == .valid)
        }
    }
}
