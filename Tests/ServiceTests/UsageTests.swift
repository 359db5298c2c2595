import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import LicensingTestSupport
import Testing
import UsageService

@Suite struct UsageTests {
    /// license-usage beside issuance and validation, as in a stack.
    func withUsage<T>(clock: ManualLicenseClock, _ body: (_ issuance: RPCClient, _ usage: RPCClient) async throws -> T) async throws -> T {
        try await withIssuanceAndValidation(clock: clock) { issuance, validation in
            let folder = TemporaryFolder()
            let usage = UsageService(
                database: try UsageService.openDatabase(path: "\(folder.path)/usage.sqlite"), validation: RPCClient(endpoint: validation.endpoint),
                clock: clock, logger: Logger(label: "test"))
            return try await withServer(usage.router(), in: folder, name: "usage") { client in try await body(issuance, client) }
        }
    }

    @Test func eventsByKeyOrIdAreRecordedOnceAndSummedPerFeature() async throws {
        let clock = ManualLicenseClock(1_800_000_000)
        try await withUsage(clock: clock) { issuance, client in
            let (policy, customer) = try await seedCatalogue(issuance)
            let first = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let second = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let license = first.license!.id
            // A product knows its key; a backend may know the id. Either names the license.
            let events = [
                UsageEvent(eventId: "e1", licenseKey: first.licenseKey, feature: "export", quantity: 2, occurredAt: clock.now - 10, user: "ann"),
                UsageEvent(eventId: "e2", licenseKey: first.licenseKey.lowercased(), feature: "export", quantity: 3, occurredAt: clock.now - 5),
                UsageEvent(eventId: "e3", licenseId: license, feature: "render", quantity: 1),
                UsageEvent(eventId: "e4", licenseKey: second.licenseKey, feature: "export", quantity: 7),
            ]
            let recorded = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: events))
            #expect(recorded.accepted == 4)
            // A client retrying the same batch is not counted twice.
            let retry = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: events))
            #expect(retry.accepted == 0)
            #expect(retry.duplicates == 4)

            let summary = try await client.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license))
            #expect(summary.features.map(\.feature) == ["export", "render"])
            #expect(summary.features.map(\.quantity) == [5, 1])
            #expect(summary.features.map(\.events) == [2, 1])
            let window = try await client.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license, from: clock.now - 7, to: clock.now))
            #expect(window.features.map(\.quantity) == [3])

            // A batch that cannot be taken at all is refused whole.
            for bad in [RecordUsageRequest(), RecordUsageRequest(events: Array(repeating: events[0], count: 1001))] {
                #expect(await expectCode(.invalidArgument) { _ = try await client.call(UsageMethods.recordUsage, bad) } == nil)
            }
            // Bad events are refused one by one, with the reason; the good ones are kept.
            let unknownKey = LicenseKey.generate().description
            let mixed = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: [
                UsageEvent(licenseKey: first.licenseKey, feature: "x", quantity: 1),
                UsageEvent(eventId: "m1", feature: "x", quantity: 1),
                UsageEvent(eventId: "m2", licenseKey: first.licenseKey, feature: "x", quantity: 0),
                UsageEvent(eventId: "m3", licenseKey: unknownKey, feature: "x", quantity: 1),
                UsageEvent(eventId: "m4", licenseId: "lic_nothing", feature: "x", quantity: 1),
                UsageEvent(eventId: "m5", licenseKey: first.licenseKey, feature: "", quantity: 1),
                UsageEvent(eventId: "m6", licenseKey: first.licenseKey, feature: "x", quantity: 1, occurredAt: clock.now + 86_400),
                UsageEvent(eventId: "m7", licenseKey: first.licenseKey, feature: "render", quantity: 4),
            ]))
            #expect(mixed.accepted == 1)
            #expect(mixed.rejected.map(\.index) == [0, 1, 2, 3, 4, 5, 6])
            let reasons = mixed.rejected.map(\.reason)
            #expect(reasons[0].hasPrefix("event_id is required"))
            #expect(reasons[1].hasPrefix("names no license"))
            #expect(reasons[2] == "quantity must be 1 or more")
            #expect(reasons[3] == "no license has this key")
            #expect(reasons[4] == "no license lic_nothing")
            #expect(reasons[5].hasPrefix("feature is required"))
            #expect(reasons[6].contains("is too far from now"))
            #expect(try await client.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license)).features.map(\.quantity) == [5, 5])

        }
    }
}
