import LicensingWire
import Metrics
import NIOConcurrencyHelpers

/// Per-method call counts by status code and latency, as swift-metrics instruments.
/// Instruments are created once per method and code: the factory look-up is not free.
final class RPCServerMetrics: Sendable {
    private struct Key: Hashable {
        let method: String
        let code: Int32
    }

    private let counters = NIOLockedValueBox<[Key: Counter]>([:])
    private let timers = NIOLockedValueBox<[String: Metrics.Timer]>([:])

    func record(method: String, code: StatusCode, duration: Duration) {
        let key = Key(method: method, code: code.rawValue)
        let counter = counters.withLockedValue { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: "rpc_server_calls_total", dimensions: [("method", method), ("code", code.description)])
            counters[key] = counter
            return counter
        }
        counter.increment()
        let timer = timers.withLockedValue { timers in
            if let timer = timers[method] { return timer }
            let timer = Metrics.Timer(label: "rpc_server_duration_seconds", dimensions: [("method", method)], preferredDisplayUnit: .seconds)
            timers[method] = timer
            return timer
        }
        timer.recordNanoseconds(duration.nanoseconds)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
