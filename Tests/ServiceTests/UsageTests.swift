import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import Testing
import UsageService

@Suite struct UsageTests {
    @Test func eventsAreRecordedOnceAndSummedPerFeature() async throws {
        let folder = TemporaryFolder()
        let clock = ManualLicenseClock(1_800_000_000)
        let usage = UsageService(database: try UsageService.openDatabase(path: "\(folder.path)/usage.sqlite"), clock: clock, logger: Logger(label: "test"))
        try await withServer(usage.router(), in: folder, name: "usage") { client in
            let events = [
                UsageEvent(eventId: "e1", licenseId: "lic_1", feature: "export", quantity: 2, occurredAt: clock.now - 10),
                UsageEvent(eventId: "e2", licenseId: "lic_1", feature: "export", quantity: 3, occurredAt: clock.now - 5),
                UsageEvent(eventId: "e3", licenseId: "lic_1", feature: "render", quantity: 1),
                UsageEvent(eventId: "e4", licenseId: "lic_2", feature: "export", quantity: 7),
            ]
            let first = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: events))
            #expect(first.accepted == 4)
            // A client retrying the same batch is not counted twice.
            let retry = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: events))
            #expect(retry.accepted == 0)
            #expect(retry.duplicates == 4)

            let summary = try await client.call(UsageMethods.getUsage, GetUsageRequest(licenseId: "lic_1"))
            #expect(summary.features.map(\.feature) == ["export", "render"])
            #expect(summary.features.map(\.quantity) == [5, 1])
            #expect(summary.features.map(\.events) == [2, 1])
            let window = try await client.call(UsageMethods.getUsage, GetUsageRequest(licenseId: "lic_1", from: clock.now - 7, to: clock.now))
            #expect(window.features.map(\.quantity) == [3])

            for bad in [
                RecordUsageRequest(),
                RecordUsageRequest(events: [UsageEvent(licenseId: "lic_1", feature: "x", quantity: 1)]),
                RecordUsageRequest(events: [UsageEvent(eventId: "e9", feature: "x", quantity: 1)]),
                RecordUsageRequest(events: [UsageEvent(eventId: "e9", licenseId: "lic_1", feature: "x", quantity: 0)]),
            ] {
                let refused = await expectCode(.invalidArgument) { _ = try await client.call(UsageMethods.recordUsage, bad) }
                #expect(refused == nil, "\(refused ?? "")")
            }
        }
    }
}
