import ArgumentParser
import Foundation
import Histogram
import LicensingRPC
import LicensingWire
import NIOCore
import NIOPosix

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
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        let seeded = try SeedFile.read(seed)
        guard !seeded.licenses.isEmpty else { throw ValidationError("\(seed) has no licenses") }
        let call = makeCall(seeded)
        let workers = connections * inFlight

        if warmup > 0 {
            _ = try await drive(call, workers: workers, until: .now + .seconds(warmup), count: nil, rate: nil, quiet: true)
        }
        let result = try await drive(call, workers: workers, until: .now + .seconds(duration), count: count, rate: rate, quiet: false)
        let report = Report(scenario: scenario.rawValue, connections: connections, inFlight: inFlight, rate: rate, result: result)
        print(json ? report.json : report.text)
    }

    /// The call each scenario makes; `index` picks the license.
    private func makeCall(_ seeded: (policy: String, customer: String, licenses: [SeededLicense])) -> @Sendable (RPCClient, Int) async throws -> Void {
        let licenses = seeded.licenses
        let policy = seeded.policy
        let customer = seeded.customer
        let batch = self.batch
        switch scenario {
        case .validate:
            return { client, index in
                let license = licenses[index % licenses.count]
                let answer = try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: license.key, fingerprint: license.fingerprint))
                guard answer.reason == .valid else { throw RPCError(.failedPrecondition, "\(answer.reason)") }
            }
        case .activate:
            let run = UInt32.random(in: 0...UInt32.max)
            return { client, index in
                let license = licenses[index % licenses.count]
                let answer = try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: license.key, fingerprint: "bench-\(run)-\(index)"))
                guard answer.reason == .valid else { throw RPCError(.failedPrecondition, "\(answer.reason)") }
            }
        case .checkout:
            return { client, index in
                let license = licenses[index % licenses.count]
                let lease = try await client.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: license.key, clientId: "bench-\(index)"))
                guard lease.reason == .valid, let id = lease.lease?.leaseId else { throw RPCError(.failedPrecondition, "\(lease.reason)") }
                _ = try await client.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: id))
            }
        case .usage:
            let run = UInt32.random(in: 0...UInt32.max)
            return { client, index in
                let license = licenses[index % licenses.count]
                let events = (0..<batch).map { UsageEvent(eventId: "bench-\(run)-\(index)-\($0)", licenseId: license.licenseID, feature: "export", quantity: 1) }
                _ = try await client.call(UsageMethods.recordUsage, RecordUsageRequest(events: events))
            }
        case .issue:
            return { client, _ in
                _ = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            }
        }
    }

    struct Outcome: Sendable {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var errors: [String: Int] = [:]
        var calls = 0
        var elapsed: Duration = .zero
    }

    /// Runs the workers: each takes the next call (and, at a constant rate, its slot on the
    /// timetable), makes it, and records its latency in microseconds.
    private func drive(
        _ call: @escaping @Sendable (RPCClient, Int) async throws -> Void, workers: Int, until end: ContinuousClock.Instant,
        count: Int?, rate: Double?, quiet: Bool
    ) async throws -> Outcome {
        let client = try target.client(connections: connections)
        let executors = (0..<System.coreCount).map { _ in EventLoopTaskExecutor(MultiThreadedEventLoopGroup.singleton.next()) }
        let next = Counter()
        let done = Counter()
        let start = ContinuousClock.now
        let progress = Task {
            guard !quiet else { return }
            var last = 0
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(1))
                let now = done.value
                FileHandle.standardError.write(Data("\r\(self.scenario.rawValue): \(now) calls, \(now - last)/s   ".utf8))
                last = now
            }
        }
        let outcome = try await withThrowingTaskGroup(of: Outcome.self) { group in
            for worker in 0..<workers {
                // Each worker runs on an event loop, like the server's connections: its
                // answers resume where the I/O happened instead of waking another thread.
                let executor = executors[worker % executors.count]
                group.addTask(executorPreference: executor) {
                    var outcome = Outcome()
                    while true {
                        let index = next.increment() - 1
                        if let count, index >= count { break }
                        var scheduled = ContinuousClock.now
                        if let rate {
                            scheduled = start + .seconds(Double(index) / rate)
                            if scheduled >= end { break }
                            if scheduled > .now { try await Task.sleep(until: scheduled) }
                        } else if count == nil, scheduled >= end {
                            break
                        }
                        do {
                            try await call(client, index)
                            let latency = ContinuousClock.now - scheduled
                            _ = outcome.histogram.record(UInt64(max(0, latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000)))
                        } catch let error as RPCError {
                            outcome.errors["\(error.code)", default: 0] += 1
                        } catch {
                            outcome.errors["\(error)", default: 0] += 1
                        }
                        outcome.calls += 1
                        _ = done.increment()
                    }
                    return outcome
                }
            }
            var total = Outcome()
            for try await part in group {
                total.histogram.add(part.histogram)
                total.calls += part.calls
                for (error, count) in part.errors { total.errors[error, default: 0] += count }
            }
            total.elapsed = ContinuousClock.now - start
            return total
        }
        progress.cancel()
        await client.close()
        if !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
        return outcome
    }
}

struct Report {
    let scenario: String
    let connections: Int
    let inFlight: Int
    let rate: Double?
    let result: Run.Outcome

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
        return lines.joined(separator: "\n")
    }

    var json: String {
        let object: [String: Any] = [
            "scenario": scenario, "connections": connections, "in_flight": inFlight, "rate": rate ?? 0,
            "calls": result.calls, "ok": result.histogram.totalCount, "seconds": seconds, "throughput": throughput,
            "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99), "p999_ms": percentile(99.9),
            "max_ms": Double(result.histogram.max) / 1000, "errors": result.errors,
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
