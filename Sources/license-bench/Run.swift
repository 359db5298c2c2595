import ArgumentParser
import Foundation
import Histogram
import LicensingRPC
import LicensingWire
import NIOCore
import NIOPosix
import Synchronization

enum Scenario: String, ExpressibleByArgument, CaseIterable {
    case validate, activate, checkout = "checkout+checkin", usage, issue
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drive one kind of call and report throughput and latency.")
    @Argument(help: "validate, activate, checkout+checkin, usage or issue.") var scenario: Scenario
    @OptionGroup var target: Target
    @Option(help: "Seed file from `license-bench seed`.") var seed: String = "seed.txt"
    @Option(help: "Connections.") var connections: Int = 32
    @Option(help: "Calls in flight per connection.") var inFlight: Int = 1
    @Option(help: "Seconds to measure.") var duration: Double = 10
    @Option(help: "Calls to make instead of a duration.") var count: Int?
    @Option(help: "Seconds of warm-up, not measured.") var warmup: Double = 2
    @Option(help: "Constant rate (calls/s): calls on a fixed timetable, latency from the scheduled time.") var rate: Double?
    @Option(help: "Usage events per RecordUsage call.") var batch: Int = 50
    @Option(help: "Event-loop threads driving the connections (redis-benchmark uses one).") var threads: Int = 1
    @Option(help: "Start at this seeded license (calls cycle through the licenses from there): runs one after another spread over all of them.") var first: Int = 0
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        let seeded = try SeedFile.read(seed)
        guard !seeded.licenses.isEmpty else { throw ValidationError("\(seed) has no licenses") }
        let tally = UsageTally()
        guard first >= 0 else { throw ValidationError("--first must be 0 or more") }
        let first = self.first
        let made = makeOperation(seeded, tally)
        let operation: @Sendable (Int) -> BenchCall = { made($0 + first) }
        if warmup > 0 {
            _ = try await drive(operation, until: .now + .seconds(warmup), count: nil, rate: nil, quiet: true)
        }
        let result = try await drive(operation, until: .now + .seconds(duration), count: count, rate: rate, quiet: false)
        var report = Report(scenario: scenario.rawValue, connections: connections, inFlight: inFlight, rate: rate, result: result)
        if scenario == .usage {
            report.usageCheck = (recorded: tally.value.load(ordering: .relaxed), counted: try await countUsage(seeded.licenses, feature: tally.feature))
        }
        print(json ? report.json : report.text)
    }

    /// Usage events go to the first licenses only, so the check asks for a few.
    private static let usageLicenses = 100

    /// Usage events acknowledged as recorded, over the warm-up and the run; this run's
    /// events name their own feature, so `GetUsage` counts them apart.
    final class UsageTally: Sendable {
        let value = Atomic<Int>(0)
        let feature = "bench-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// What `GetUsage` counts of this run's events: every acknowledged one, once.
    private func countUsage(_ licenses: [SeededLicense], feature usageFeature: String) async throws -> Int {
        let client = RPCClient(endpoint: try Endpoint(parsing: target.endpoint), configuration: try target.configuration(connections: 1))
        defer { Task { await client.close() } }
        let now = Int64(Date().timeIntervalSince1970)
        var counted: UInt64 = 0
        for license in licenses.prefix(Self.usageLicenses) {
            let summary = try await client.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.licenseID, from: now - 3600, to: now + 60))
            counted += summary.features.first { $0.feature == usageFeature }?.quantity ?? 0
        }
        return Int(counted)
    }

    /// The operation each scenario makes; `index` picks the license. Each answer is
    /// decoded and checked: a validation that is not VALID counts as an error.
    private func makeOperation(_ seeded: (policy: String, customer: String, licenses: [SeededLicense]), _ tally: UsageTally) -> @Sendable (Int) -> BenchCall {
        let licenses = seeded.licenses
        let policy = seeded.policy
        let customer = seeded.customer
        let batch = self.batch
        let run = UInt32.random(in: 0...UInt32.max)
        switch scenario {
        case .validate:
            return { index in
                let license = licenses[index % licenses.count]
                return BenchCall.of(ValidationMethods.validate, ValidateRequest(licenseKey: license.key, fingerprint: license.fingerprint)) { answer in
                    guard answer.reason == .valid else { throw Refused(answer.reason) }
                    return nil
                }
            }
        case .activate:
            return { index in
                let license = licenses[index % licenses.count]
                return BenchCall.of(ValidationMethods.activate, ActivateRequest(licenseKey: license.key, fingerprint: "bench-\(run)-\(index)")) { answer in
                    guard answer.reason == .valid else { throw Refused(answer.reason) }
                    return nil
                }
            }
        case .checkout:
            return { index in
                let license = licenses[index % licenses.count]
                return BenchCall.of(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: license.key, clientId: "bench-\(index)")) { lease in
                    guard lease.reason == .valid, let id = lease.lease?.leaseId else { throw Refused(lease.reason) }
                    return BenchCall.of(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: id))
                }
            }
        case .usage:
            let feature = tally.feature
            let users = min(licenses.count, Self.usageLicenses)
            return { index in
                let license = licenses[index % users]
                // Indices start again after the warm-up: a per-call salt keeps every event id new.
                let call = UInt64.random(in: 0...UInt64.max)
                let events = (0..<batch).map { UsageEvent(eventId: "bench-\(run)-\(index)-\(call)-\($0)", licenseId: license.licenseID, feature: feature, quantity: 1) }
                return BenchCall.of(UsageMethods.recordUsage, RecordUsageRequest(events: events)) { answer in
                    // Every event of the batch recorded, durably, once.
                    guard answer.rejected.isEmpty else { throw Refused(.notFound) }
                    tally.value.add(Int(answer.accepted), ordering: .relaxed)
                    guard Int(answer.accepted) == batch else { throw Refused(.unspecified) }
                    return nil
                }
            }
        case .issue:
            return { _ in BenchCall.of(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)) }
        }
    }

    struct Outcome: Sendable {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var errors: [String: Int] = [:]
        var calls = 0
        var elapsed: Duration = .zero
    }

    /// Opens the connections (spread over the event loops), lets each drive its share of
    /// the operations, and merges their latencies (microseconds) and errors.
    private func drive(
        _ operation: @escaping @Sendable (Int) -> BenchCall, until end: ContinuousClock.Instant, count: Int?, rate: Double?, quiet: Bool
    ) async throws -> Outcome {
        let endpoint = try Endpoint(parsing: target.endpoint)
        let configuration = try target.configuration(connections: connections)
        let start = ContinuousClock.now
        let plan = LoadPlan(
            operation: operation, metadata: configuration.metadata.entries, inFlight: max(1, inFlight), count: count, rate: rate,
            start: start, end: end, connections: connections)
        let progress = Task {
            guard !quiet else { return }
            var last = 0
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(1))
                let now = plan.done.value
                FileHandle.standardError.write(Data("\r\(self.scenario.rawValue): \(now) calls, \(now - last)/s   ".utf8))
                last = now
            }
        }
        defer { progress.cancel() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        defer { group.shutdownGracefully { _ in } }
        var results: [EventLoopFuture<Outcome>] = []
        for slot in 0..<connections {
            let loop = group.next()
            let finished = loop.makePromise(of: Outcome.self)
            let opened = RPCClient.openChannel(to: endpoint, configuration: configuration, on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(LoadConnection(plan: plan, slot: slot, finished: finished))
            }
            opened.whenFailure { finished.fail($0) }
            results.append(finished.futureResult)
        }
        var total = Outcome()
        var failure: (any Error)?
        for result in results {
            do {
                let part = try await result.get()
                total.histogram.add(part.histogram)
                total.calls += part.calls
                for (error, count) in part.errors { total.errors[error, default: 0] += count }
            } catch {
                failure = error
            }
        }
        if let failure { throw RPCError(.unavailable, "cannot connect to \(endpoint): \(failure)") }
        total.elapsed = ContinuousClock.now - start
        if !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
        return total
    }
}

struct Report {
    let scenario: String
    let connections: Int
    let inFlight: Int
    let rate: Double?
    let result: Run.Outcome
    /// Usage: events acknowledged, and what GetUsage counted of them afterwards.
    var usageCheck: (recorded: Int, counted: Int)?

    var seconds: Double { Double(result.elapsed.components.seconds) + Double(result.elapsed.components.attoseconds) / 1e18 }
    var throughput: Double { Double(result.histogram.totalCount) / max(seconds, 1e-9) }
    func percentile(_ p: Double) -> Double { Double(result.histogram.valueAtPercentile(p)) / 1000 }

    var text: String {
        var lines = [
            "\(scenario): \(connections) connections x \(inFlight) in flight\(rate.map { ", constant rate \(Int($0))/s" } ?? "")",
            String(format: "  %d calls in %.1f s: %.0f ok calls/s", result.calls, seconds, throughput),
            String(format: "  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f",
                   percentile(50), percentile(90), percentile(99), percentile(99.9), Double(result.histogram.max) / 1000),
        ]
        if !result.errors.isEmpty {
            lines.append("  errors: " + result.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if let usageCheck {
            lines.append("  GetUsage counts \(usageCheck.counted) of the \(usageCheck.recorded) events acknowledged\(usageCheck.counted == usageCheck.recorded ? ": each once" : " — MISMATCH")")
        }
        return lines.joined(separator: "\n")
    }

    var json: String {
        var object: [String: Any] = [
            "scenario": scenario, "connections": connections, "in_flight": inFlight, "rate": rate ?? 0,
            "calls": result.calls, "ok": result.histogram.totalCount, "seconds": seconds, "throughput": throughput,
            "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99), "p999_ms": percentile(99.9),
            "max_ms": Double(result.histogram.max) / 1000, "errors": result.errors,
        ]
        if let usageCheck {
            object["usage_recorded"] = usageCheck.recorded
            object["usage_counted"] = usageCheck.counted
            if usageCheck.counted != usageCheck.recorded {
                object["errors"] = result.errors.merging(["usage miscounted": abs(usageCheck.recorded - usageCheck.counted)]) { $0 + $1 }
            }
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
