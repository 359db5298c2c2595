import Foundation
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Where the replicas are: a fixed list, or every address a DNS name resolves to (a
/// Kubernetes headless Service), looked up again every few seconds.
public enum ValidationReplicaSource: Sendable, CustomStringConvertible {
    case fixed([Endpoint])
    case dns(host: String, port: Int)

    public init(parsing text: String) throws {
        if text.hasPrefix("dns:") {
            guard case .tcp(let host, let port) = try Endpoint(parsing: String(text.dropFirst(4))) else {
                throw RPCError.invalidArgument("validation-replicas = \(text): expected dns:NAME:PORT")
            }
            self = .dns(host: host, port: port)
            return
        }
        self = .fixed(try text.split(separator: ",").map { try Endpoint(parsing: $0.trimmingCharacters(in: .whitespaces)) })
    }

    public var description: String {
        switch self {
        case .fixed(let endpoints): endpoints.map(\.description).joined(separator: ", ")
        case .dns(let host, let port): "dns:\(host):\(port)"
        }
    }
}

/// Validation's read replicas behind the gateway (docs/scaling.md). Each Validate goes to
/// the replica in rotation with the fewest calls in flight; a replica is in rotation while
/// its health probe answers and it is no further behind its feeds than `maxLag` events. A
/// call that did not get an answer from its replica (refused, cut off, too slow) is sent to
/// another: Validate is a read. With no replica in rotation, the primary answers.
final class ReadReplicas: Sendable {
    final class Replica: Sendable {
        let endpoint: Endpoint
        let client: RPCClient
        let inFlight = Atomic<Int>(0)
        private let state = Mutex((serving: true, lag: UInt64(0)))

        init(endpoint: Endpoint, client: RPCClient) {
            self.endpoint = endpoint
            self.client = client
        }

        var serving: Bool { state.withLock { $0.serving } }
        var lag: UInt64 { state.withLock { $0.lag } }
        func markNotServing() { state.withLock { $0.serving = false } }
        func observed(serving: Bool, lag: UInt64) { state.withLock { $0 = (serving, lag) } }
    }

    let source: ValidationReplicaSource
    let primary: Backend
    let maxLag: UInt64
    /// One try's share of a call's time: a replica cut off from the network answers nothing,
    /// and the call must still reach another one in time.
    let attemptTimeout: Duration
    private let makeClient: @Sendable (Endpoint) -> RPCClient
    private let members = Mutex<[Replica]>([])
    private let rotation = Atomic<Int>(0)
    let logger: Logger

    init(
        source: ValidationReplicaSource, primary: Backend, maxLag: UInt64 = 1000, attemptTimeout: Duration = .milliseconds(400), logger: Logger,
        makeClient: @escaping @Sendable (Endpoint) -> RPCClient
    ) {
        self.source = source
        self.primary = primary
        self.maxLag = maxLag
        self.attemptTimeout = attemptTimeout
        self.makeClient = makeClient
        self.logger = logger
        if case .fixed(let endpoints) = source { members.withLock { $0 = endpoints.map { Replica(endpoint: $0, client: makeClient($0)) } } }
    }

    var replicas: [Replica] { members.withLock { $0 } }

    func inRotation(_ replica: Replica) -> Bool { replica.serving && replica.lag <= maxLag }

    /// The replica in rotation with the fewest calls in flight, not one already tried; ties
    /// go round in turn.
    func pick(excluding tried: [Replica] = []) -> Replica? {
        let all = replicas
        guard !all.isEmpty else { return nil }
        let start = rotation.wrappingAdd(1, ordering: .relaxed).oldValue
        var best: Replica?
        for offset in 0..<all.count {
            let replica = all[(start &+ offset) % all.count]
            guard inRotation(replica), !tried.contains(where: { $0 === replica }) else { continue }
            if best == nil || replica.inFlight.load(ordering: .relaxed) < best!.inFlight.load(ordering: .relaxed) { best = replica }
        }
        return best
    }

    /// Forwards a Validate to a replica, to another when that one gives no answer, and to the
    /// primary when none is in rotation.
    func forward(_ call: ServerCall, tried: [Replica] = []) -> EventLoopFuture<[UInt8]> {
        guard let replica = pick(excluding: tried) else { return primary.callRawFuture(call) }
        let deadline = min(call.deadline, .now + attemptTimeout)
        replica.inFlight.add(1, ordering: .relaxed)
        let answer = replica.client.callRawFuture(call.method, payload: call.payload, metadata: call.metadata, deadline: deadline, on: call.eventLoop)
        answer.whenComplete { _ in replica.inFlight.subtract(1, ordering: .relaxed) }
        return answer.flatMapError { error in
            // An answer the replica gave (even an error) stands; only no answer is tried elsewhere.
            guard let failure = error as? RPCError, !failure.fromPeer, failure.code == .unavailable || failure.code == .deadlineExceeded,
                ContinuousClock.now < call.deadline
            else { return answer.eventLoop.makeFailedFuture(error) }
            replica.markNotServing()
            self.logger.notice("validation replica gave no answer; trying another", metadata: ["replica": "\(replica.endpoint)", "error": "\(failure)"])
            return self.forward(call, tried: tried + [replica])
        }
    }

    /// Asks each replica's health: reachable, and how far behind its feeds it is.
    func probe() async {
        await withTaskGroup(of: Void.self) { group in
            for replica in replicas {
                group.addTask {
                    let before = self.inRotation(replica)
                    do {
                        let health = try await replica.client.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(1))
                        let lag = health.feeds.map { $0.sourceSeq > $0.appliedSeq ? $0.sourceSeq - $0.appliedSeq : 0 }.max() ?? 0
                        // Not serving (a new replica still copying its sources): no calls yet.
                        replica.observed(serving: health.status == .serving, lag: lag)
                    } catch {
                        replica.observed(serving: false, lag: replica.lag)
                    }
                    let after = self.inRotation(replica)
                    if before != after {
                        self.logger.notice(
                            after ? "validation replica back in rotation" : "validation replica out of rotation",
                            metadata: ["replica": "\(replica.endpoint)", "serving": "\(replica.serving)", "lag_events": "\(replica.lag)"])
                    }
                }
            }
        }
    }

    /// Looks the DNS name up again: new addresses join (once their probe answers), gone ones leave.
    func refresh() async {
        guard case .dns(let host, let port) = source else { return }
        let addresses: [String]
        do {
            addresses = try await NIOThreadPool.singleton.runIfActive { try Self.resolve(host) }
        } catch {
            logger.warning("cannot resolve the validation replicas' name; keeping the ones known", metadata: ["name": "\(host)", "error": "\(error)"])
            return
        }
        let wanted = Set(addresses.map { Endpoint.tcp(host: $0, port: port) })
        let (added, removed) = members.withLock { members -> ([Endpoint], [Replica]) in
            let known = Set(members.map(\.endpoint))
            let added = wanted.subtracting(known).sorted { $0.description < $1.description }
            let removed = members.filter { !wanted.contains($0.endpoint) }
            members.removeAll { !wanted.contains($0.endpoint) }
            // A new replica waits for its first probe before it takes calls.
            members += added.map { endpoint in
                let replica = Replica(endpoint: endpoint, client: makeClient(endpoint))
                replica.observed(serving: false, lag: 0)
                return replica
            }
            return (added, removed)
        }
        for replica in removed { await replica.client.close() }
        if !added.isEmpty || !removed.isEmpty {
            logger.info("validation replicas changed", metadata: [
                "added": "\(added.map(\.description))", "removed": "\(removed.map(\.endpoint.description))",
            ])
        }
    }

    /// The IPv4 and IPv6 addresses a name resolves to.
    static func resolve(_ host: String) throws -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else { throw RPCError(.unavailable, "cannot resolve \(host): \(String(cString: gai_strerror(status)))") }
        defer { freeaddrinfo(list) }
        var addresses: Set<String> = []
        var next = list
        while let entry = next {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if let address = entry.pointee.ai_addr,
                getnameinfo(address, entry.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0
            {
                addresses.insert(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            next = entry.pointee.ai_next
        }
        return addresses.sorted()
    }
}

/// Probes the replicas every `interval` and, for a DNS source, looks the name up again
/// every `refreshInterval`.
final class ReplicaProber: Service, Sendable {
    private let replicas: ReadReplicas
    private let interval: Duration
    private let refreshInterval: Duration

    init(replicas: ReadReplicas, interval: Duration = .milliseconds(500), refreshInterval: Duration = .seconds(5)) {
        self.replicas = replicas
        self.interval = interval
        self.refreshInterval = refreshInterval
    }

    func run() async throws {
        var sinceRefresh = refreshInterval
        await Periodically.run(every: interval) {
            if sinceRefresh >= refreshInterval {
                await replicas.refresh()
                sinceRefresh = .zero
            }
            sinceRefresh += interval
            await replicas.probe()
        }
    }
}
