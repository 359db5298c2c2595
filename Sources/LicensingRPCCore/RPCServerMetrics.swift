import LicensingWire
import Metrics
import Synchronization

/// Per-method call counts by status code and latency, as swift-metrics instruments.
///
/// The instruments of every method the server has are made when it starts, so recording
/// an answered call takes no lock (counters for codes other than OK are made on first use).
/// Calls to methods the server does not have share one "unknown" series: a client sending
/// made-up method names cannot grow the metrics without bound.
package final class RPCServerMetrics: Sendable {
    private final class Instruments: Sendable {
        let method: String
        let ok: Counter
        let duration: Metrics.Timer
        private let failures = Mutex<[Int32: Counter]>([:])

        init(method: String) {
            self.method = method
            self.ok = Counter(label: "rpc_server_calls_total", dimensions: [("method", method), ("code", StatusCode.ok.description)])
            self.duration = Metrics.Timer(label: "rpc_server_duration_seconds", dimensions: [("method", method)], preferredDisplayUnit: .seconds)
        }

        func counter(_ code: StatusCode) -> Counter {
            if code == .ok { return ok }
            return failures.withLock { failures in
                if let counter = failures[code.rawValue] { return counter }
                let counter = Counter(label: "rpc_server_calls_total", dimensions: [("method", method), ("code", code.description)])
                failures[code.rawValue] = counter
                return counter
            }
        }
    }

    private let byMethod: [String: Instruments]
    private let unknown: Instruments

    package init(methods: [String]) {
        byMethod = Dictionary(uniqueKeysWithValues: methods.map { ($0, Instruments(method: $0)) })
        unknown = Instruments(method: "unknown")
    }

    package func record(method: String, code: StatusCode, duration: Duration) {
        let instruments = byMethod[method] ?? unknown
        instruments.counter(code).increment()
        instruments.duration.recordNanoseconds(duration.nanoseconds)
    }
}

extension Duration {
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
