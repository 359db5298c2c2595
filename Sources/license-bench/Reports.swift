import ArgumentParser
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ReportingService

/// Builds a year of history for a reporting read model, as fast as feed pages apply, then
/// times the reports over it and an export of every usage row.
struct Reports: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild a reporting read model from a generated year of feeds; time the reports and a large export.")
    @Option(help: "Licenses (over 10 products).") var licenses: Int = 100_000
    @Option(help: "Validations and usage events over the year (half each), rolled up as the feeds carry them.") var events: Int = 10_000_000
    @Option(help: "Folder for the database (default: a temporary one, removed after).") var folder: String?
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        guard (10...10_000_000).contains(licenses), (0...1_000_000_000).contains(events) else {
            throw ValidationError("--licenses 10 to 10,000,000; --events 0 to 1,000,000,000")
        }
        let directory = folder ?? NSTemporaryDirectory() + "lm-reports-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { if folder == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let database = try ReportingService.openDatabase(path: "\(directory)/reporting.sqlite")
        let history = History(licenses: licenses, events: events)

        // The rebuild: every generated feed page through the same writer the followers use.
        let writer = ReadModelWriter(database: database)
        var applied = 0
        var feeds: [(String, Int, Double)] = []
        func rebuild<Event>(_ feed: String, _ pages: [[Event]], _ apply: ([Event]) async throws -> Void) async throws {
            let start = ContinuousClock.now
            var count = 0
            for page in pages {
                try await apply(page)
                count += page.count
            }
            feeds.append((feed, count, (ContinuousClock.now - start).seconds))
            applied += count
        }
        try await rebuild("issuance", history.issuancePages()) { try await writer.apply(issuance: $0) }
        try await rebuild("validation", history.validationPages()) { try await writer.apply(validation: $0) }
        try await rebuild("usage", history.usagePages()) { try await writer.apply(usage: $0) }
        let rebuildSeconds = feeds.reduce(0) { $0 + $1.2 }

        // The reports, over the year, for one product, through the RPC server.
        let socket = "\(directory)/reporting.sock"
        let nowhere = RPCClient(endpoint: .unix(path: "\(directory)/absent.sock"), configuration: RPCClientConfiguration(connections: 1, connectTimeout: .milliseconds(50)))
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let service = ReportingService(
            database: database, issuance: nowhere, validation: nowhere, usage: nowhere, clock: FixedClock(now: history.now), logger: logger)
        let server = RPCServer(router: service.router(), configuration: RPCServerConfiguration(endpoints: [.unix(path: socket)]), logger: logger)
        let serving = Task { try await server.run() }
        defer { serving.cancel() }
        _ = try await server.listeningEndpoints
        let client = RPCClient(endpoint: .unix(path: socket), configuration: RPCClientConfiguration(connections: 1))
        let year = ReportRequest(productId: history.productID(0), from: history.yearStart, to: history.now)
        var timings: [(String, Double)] = []
        func time(_ name: String, _ body: () async throws -> Void) async throws {
            var runs: [Double] = []
            for _ in 0..<3 {
                let start = ContinuousClock.now
                try await body()
                runs.append((ContinuousClock.now - start).seconds * 1000)
            }
            timings.append((name, runs.sorted()[1]))
        }
        try await time("usage") { _ = try await client.call(ReportingMethods.usageReport, year, timeout: .seconds(60)) }
        try await time("compliance") { _ = try await client.call(ReportingMethods.complianceReport, year, timeout: .seconds(60)) }
        try await time("revenue") { _ = try await client.call(ReportingMethods.revenueReport, year, timeout: .seconds(60)) }
        try await time("renewals") {
            _ = try await client.call(ReportingMethods.renewalPipeline, ReportRequest(productId: history.productID(0), days: 30), timeout: .seconds(60))
        }

        // The export: every usage row of the year, every product, as CSV.
        let before = ResidentMemory.now()
        let sampler = Task {
            var peak = ResidentMemory.now()
            while !Task.isCancelled {
                peak = max(peak, ResidentMemory.now())
                try? await Task.sleep(for: .milliseconds(50))
            }
            return peak
        }
        let exportStart = ContinuousClock.now
        var rows = 0
        var bytes = 0
        for try await chunk in try await client.stream(
            ReportingMethods.export, ExportRequest(report: "usage", format: "csv", filter: ReportRequest(from: history.yearStart, to: history.now)),
            timeout: .seconds(3600))
        {
            rows += Int(chunk.rows)
            bytes += chunk.data.count
        }
        let exportSeconds = (ContinuousClock.now - exportStart).seconds
        sampler.cancel()
        let peak = await sampler.value
        await client.close()
        await nowhere.close()

        let result: [String: Any] = [
            "licenses": licenses, "events": events, "feed_events": applied, "rebuild_seconds": rebuildSeconds,
            "rebuild_events_per_second": Double(applied) / max(rebuildSeconds, 1e-9),
            "report_ms": Dictionary(uniqueKeysWithValues: timings), "export_rows": rows, "export_bytes": bytes,
            "export_rows_per_second": Double(rows) / max(exportSeconds, 1e-9), "rss_before_mib": before / 1_048_576, "rss_peak_mib": peak / 1_048_576,
        ]
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("read model: \(licenses) licenses, \(events) validations and usage events over a year = \(applied) feed events")
            print(String(format: "  rebuild: %.1f s, %.0f feed events/s", rebuildSeconds, Double(applied) / max(rebuildSeconds, 1e-9)))
            for (feed, count, seconds) in feeds {
                print(String(format: "    %@ feed: %d events in %.1f s, %.0f/s", feed, count, seconds, Double(count) / max(seconds, 1e-9)))
            }
            for (name, ms) in timings { print(String(format: "  %@ report, one product, a year: %.0f ms (median of 3)", name, ms)) }
            print(String(format: "  export: %d usage rows (%d MiB) as CSV in %.1f s, %.0f rows/s; resident memory %d MiB before, %d MiB at most during",
                         rows, bytes / 1_048_576, exportSeconds, Double(rows) / max(exportSeconds, 1e-9), before / 1_048_576, peak / 1_048_576))
        }
    }
}

/// A clock fixed at the end of the generated year.
struct FixedClock: LicenseClock {
    let now: Int64
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

enum ResidentMemory {
    /// Resident bytes of this process now.
    static func now() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
    }
}

/// A year of a vendor's history as its feeds would carry it: 10 products, a customer per 10
/// licenses, half the licenses monthly subscriptions paid every month, validations rolled up
/// per license, outcome and minute (10 on average), usage per license, feature and day
/// (10 events on average) over 10 features, an alert on one license in a hundred.
struct History {
    let licenses: Int
    let events: Int
    let now: Int64 = 1_800_000_000 / 86400 * 86400
    var yearStart: Int64 { now - 365 * 86400 }
    static let page = 5000
    static let features = (0..<10).map { "feature-\($0)" }

    func productID(_ index: Int) -> String { "prod_bench\(index)" }
    func licenseID(_ index: Int) -> String { "lic_bench\(index)" }

    /// A small deterministic generator: the same history every run.
    struct Random {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
    }

    func issuancePages() -> [[ChangeEvent]] {
        var random = Random(state: 1)
        var events: [ChangeEvent] = (0..<10).map {
            ChangeEvent(action: "product.created", subject: .product(Product(id: productID($0), name: "Product \($0)", code: "P\($0)", tenantId: "default")))
        }
        let currencies = ["EUR", "USD", "GBP"]
        for index in 0..<licenses {
            let issued = yearStart + Int64(random.next(300 * 86400))
            let states: [LicenseState] = [.active, .active, .active, .active, .active, .active, .active, .active, .expired, .revoked]
            let subscription = index % 2 == 0
            let expires = subscription ? now + Int64(random.next(60 * 86400)) - 10 * 86400 : 0
            events.append(ChangeEvent(action: "license.issued", subject: .license(License(
                id: licenseID(index), productId: productID(index % 10), policyId: "pol_bench\(index % 10)", customerId: "cus_bench\(index / 10)",
                licenseType: subscription ? .subscription : .enterprise, state: states[random.next(states.count)], issuedAt: issued,
                startsAt: issued, expiresAt: expires, graceSeconds: 7 * 86400, maxMachines: 3, maxSeats: 5, overagePermille: 1000, tenantId: "default"))))
            guard subscription else { continue }
            let amount = Int64(900 + random.next(9000))
            let currency = currencies[random.next(currencies.count)]
            var sub = Subscription(
                id: "sub_bench\(index)", licenseId: licenseID(index), billingRef: "b\(index)", periodStart: issued, periodEnd: issued + 30 * 86400,
                status: .active, autoRenew: true, amountMinor: amount, currency: currency)
            events.append(ChangeEvent(action: "subscription.started", occurredAt: issued, subject: .subscription(sub)))
            var paidAt = issued
            while paidAt < now {
                sub.periodStart = paidAt
                sub.periodEnd = paidAt + 30 * 86400
                events.append(ChangeEvent(action: "subscription.paid", occurredAt: paidAt, subject: .subscription(sub)))
                paidAt += 30 * 86400
            }
        }
        for (index, _) in events.enumerated() { events[index].seq = UInt64(index + 1) }
        return stride(from: 0, to: events.count, by: Self.page).map { Array(events[$0..<min($0 + Self.page, events.count)]) }
    }

    func validationPages() -> [[ValidationEvent]] {
        var random = Random(state: 2)
        var pages: [[ValidationEvent]] = []
        var page: [ValidationEvent] = []
        func add(_ event: ValidationEvent) {
            page.append(event)
            if page.count == Self.page {
                pages.append(page)
                page.removeAll(keepingCapacity: true)
            }
        }
        for index in 0..<licenses {
            add(ValidationEvent(occurredAt: yearStart + Int64(random.next(365 * 86400)), tenantId: "default", licenseId: licenseID(index), event: .machine(
                MachineEvent(machineId: "m\(index)", activated: true, machinesActive: UInt32(1 + random.next(3)), maxMachines: 3))))
        }
        var validations = events / 2
        let reasons: [ReasonCode] = Array(repeating: .valid, count: 18) + [.revoked, .regionNotAllowed]
        while validations > 0 {
            let count = min(validations, 1 + random.next(19))
            validations -= count
            let minute = yearStart + Int64(random.next(365 * 1440)) * 60
            add(ValidationEvent(occurredAt: minute + 59, tenantId: "default", licenseId: licenseID(random.next(licenses)), event: .outcome(OutcomeRollup(
                minute: minute, reason: reasons[random.next(reasons.count)], count: UInt64(count), distinctFingerprints: UInt32(1 + random.next(3)),
                distinctCountries: 1, countries: ["DE"], machineAllowance: 3))))
        }
        if !page.isEmpty { pages.append(page) }
        return pages
    }

    func usagePages() -> [[UsageFeedEvent]] {
        var random = Random(state: 3)
        var pages: [[UsageFeedEvent]] = []
        var page: [UsageFeedEvent] = []
        var remaining = events / 2
        while remaining > 0 {
            let count = min(remaining, 1 + random.next(19))
            remaining -= count
            let day = yearStart + Int64(random.next(365)) * 86400
            page.append(UsageFeedEvent(occurredAt: day + 86399, tenantId: "default", licenseId: licenseID(random.next(licenses)), event: .usage(DailyUsage(
                feature: Self.features[random.next(Self.features.count)], day: day, quantity: UInt64(count * (1 + random.next(5))), events: UInt64(count)))))
            if page.count == Self.page {
                pages.append(page)
                page.removeAll(keepingCapacity: true)
            }
        }
        for index in stride(from: 0, to: licenses, by: 100) {
            let at = yearStart + Int64(random.next(365 * 86400))
            page.append(UsageFeedEvent(occurredAt: at, tenantId: "default", licenseId: licenseID(index), event: .alert(ComplianceAlert(
                id: "alert_bench\(index)", licenseId: licenseID(index), reason: .machineLimit, detail: "validated from 5 distinct machines",
                raisedAt: at, rule: "fingerprint-sharing", lastSeenAt: at, count: 1, tenantId: "default"))))
        }
        if !page.isEmpty { pages.append(page) }
        return pages
    }
}
