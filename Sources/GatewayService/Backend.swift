import Synchronization
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// A service behind the gateway. When it cannot be reached, callers pay the connect
/// timeout once; after that calls fail fast with UNAVAILABLE until the health probe sees
/// the service answer again.
final class Backend: Sendable {
    let name: String
    let client: RPCClient
    private let down = Mutex(false)

    init(name: String, client: RPCClient) {
        self.name = name
        self.client = client
    }

    var isDown: Bool { down.withLock { $0 } }

    func markUp() { down.withLock { $0 = false } }
    func markDown() { down.withLock { $0 = true } }

    private func checkUp() throws(RPCError) {
        if isDown {
            throw RPCError(.unavailable, "\(name) is unavailable; the gateway is failing fast until it answers its health probe again")
        }
    }

    private func observe(_ error: any Error) {
        // A backend that answers UNAVAILABLE itself (its HSM is down, say) is up: only a call
        // that could not reach it marks it down.
        if let error = error as? RPCError, error.code == .unavailable, !error.fromPeer { markDown() }
    }

    func callRaw(_ method: String, payload: [UInt8], metadata: RPCMetadata, deadline: ContinuousClock.Instant) async throws -> [UInt8] {
        try checkUp()
        do {
            return try await client.callRaw(method, payload: payload, metadata: metadata, deadline: deadline)
        } catch {
            observe(error)
            throw error
        }
    }

    /// Forwards a call admitted by the gateway, on the caller's event loop when it can.
    func callRawFuture(_ call: ServerCall) -> EventLoopFuture<[UInt8]> {
        let loop = call.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
        do {
            try checkUp()
        } catch {
            return loop.makeFailedFuture(error)
        }
        let answer = client.callRawFuture(call.method, payload: call.payload, metadata: call.metadata, deadline: call.deadline, on: call.eventLoop)
        answer.whenFailure { error in self.observe(error) }
        return answer
    }

    func streamRaw(_ method: String, payload: [UInt8], metadata: RPCMetadata, deadline: ContinuousClock.Instant) async throws -> AsyncThrowingStream<[UInt8], any Error> {
        try checkUp()
        do {
            return try await client.streamRaw(method, payload: payload, metadata: metadata, deadline: deadline)
        } catch {
            observe(error)
            throw error
        }
    }

    func call<Request, Response>(_ method: WireMethod<Request, Response>, _ request: Request, metadata: RPCMetadata, deadline: ContinuousClock.Instant) async throws -> Response {
        let payload = try await callRaw(method.name, payload: request.serializedBytes(), metadata: metadata, deadline: deadline)
        do {
            return try Response(serializedBytes: payload)
        } catch {
            throw RPCError(.internal, "\(name) answered \(method.name) with bytes that do not decode")
        }
    }

    /// One health probe: marks the backend up when it answers.
    func probe() async {
        do {
            _ = try await client.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(1))
            markUp()
        } catch {
            markDown()
        }
    }
}

/// Probes the backends that are down, every `interval`.
final class BackendProber: Service, Sendable {
    private let backends: [Backend]
    private let interval: Duration
    private let logger: Logger

    init(backends: [Backend], interval: Duration = .milliseconds(500), logger: Logger) {
        self.backends = backends
        self.interval = interval
        self.logger = logger
    }

    func run() async throws {
        await Periodically.run(every: interval) {
            for backend in backends where backend.isDown {
                await backend.probe()
                if !backend.isDown { logger.info("backend is back", metadata: ["backend": "\(backend.name)"]) }
            }
        }
    }
}
