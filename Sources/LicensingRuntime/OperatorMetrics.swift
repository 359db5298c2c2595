import Synchronization
import Foundation
import Logging
import Metrics
import ServiceLifecycle

/// What each metric the services record means: the `# HELP` line Prometheus shows beside it.
/// swift-metrics instruments carry no help text, so the endpoint adds these when it renders.
public enum MetricHelp {
    public static let text: [String: String] = [
        "rpc_server_calls_total": "Calls answered, by method and status code.",
        "rpc_server_duration_seconds": "Time from a request's arrival to its answer, by method.",
        "rpc_server_open_connections": "Connections open to this service now.",
        "feed_applied_seq": "Position a follower has applied in another service's feed, by feed.",
        "feed_lag_events": "Events a source's feed has that this follower has not applied yet, by feed.",
        "validation_outcomes_total": "Validations answered, by reason code.",
        "validation_log_dropped_entries": "Validation-log entries not kept while the log could not be written (disk full or read-only) and the memory buffer was full.",
        "reporting_exports_running": "Report exports streaming now.",
        "reporting_export_rows_total": "Report rows sent by exports.",
        "validation_seats_in_use": "Floating-seat leases held now.",
        "issuance_licenses": "Licenses, by stored state.",
        "issuance_feed_last_seq": "Position of the newest event in issuance's change feed.",
        "group_commit_batch_size": "Changes committed together in one transaction (one disk sync).",
        "group_commit_seconds": "Time to write and sync one group-commit transaction.",
        "sqlite_wal_bytes": "Size of the service's SQLite write-ahead log.",
        "process_resident_memory_bytes": "Resident memory of the process.",
        "process_open_fds": "File descriptors the process has open.",
    ]

    /// Prometheus text with a `# HELP` line before each `# TYPE` line of a known metric.
    public static func annotate(_ exposition: String) -> String {
        var out: [Substring] = []
        var helped = Set<Substring>()
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# HELP ") { helped.insert(line.dropFirst(7).prefix { $0 != " " }) }
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).prefix { $0 != " " }
                if !helped.contains(name), let help = text[String(name)] {
                    out.append("# HELP \(name) \(help)")
                    helped.insert(name)
                }
            }
            out.append(line)
        }
        return out.joined(separator: "\n")
    }
}

/// Figures gathered every few seconds rather than on each event: the process's memory and
/// file descriptors, the WAL's size, and what a service adds (licenses by state, seats in
/// use). A service registers its own with ``add(_:)``.
public final class MetricsSampler: Service, Sendable {
    private let interval: Duration
    private let databasePath: String
    private let logger: Logger
    private let samples = Mutex<[@Sendable () async throws -> Void]>([])
    private let resident = Gauge(label: "process_resident_memory_bytes")
    private let descriptors = Gauge(label: "process_open_fds")
    private let wal: Gauge

    public init(databasePath: String, service: String, interval: Duration = .seconds(5), logger: Logger) {
        self.databasePath = databasePath
        self.interval = interval
        self.logger = logger
        self.wal = Gauge(label: "sqlite_wal_bytes", dimensions: [("database", service)])
    }

    public func add(_ sample: @escaping @Sendable () async throws -> Void) {
        samples.withLock { $0.append(sample) }
    }

    public func run() async throws {
        await Periodically.run(every: interval) { await sampleOnce() }
    }

    public func sampleOnce() async {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int64(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        {
            resident.record(kib * 1024)
        }
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            descriptors.record(entries.count)
        }
        let walSize = (try? FileManager.default.attributesOfItem(atPath: databasePath + "-wal")[.size] as? Int) ?? 0
        wal.record(walSize)
        for sample in samples.withLock({ $0 }) {
            do {
                try await sample()
            } catch {
                logger.debug("a metrics sample failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
