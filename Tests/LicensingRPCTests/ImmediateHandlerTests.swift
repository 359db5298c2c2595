import LicensingRPC
import LicensingWire
import NIOCore
import NIOPosix
import Synchronization
import LicensingTestSupport
import Testing

/// The most handlers running at once.
final class Concurrency: Sendable {
    private let state = Mutex((now: 0, most: 0, total: 0))
    func enter() { state.withLock { $0.now += 1; $0.total += 1; $0.most = max($0.most, $0.now) } }
    func leave() { state.withLock { $0.now -= 1 } }
    /// Handlers running now.
    var current: Int { state.withLock { $0.now } }
    var most: Int { state.withLock { $0.most } }
    /// Handlers started.
    var total: Int { state.withLock { $0.total } }
}

/// GetProduct answered by an immediate handler: ids starting "now" at once, "later" from a
/// task, "future" from a future, "bad" with INVALID_ARGUMENT.
func immediateRouter(running: Concurrency? = nil, laterDelay: Duration = .milliseconds(10)) -> RPCRouter {
    var router = RPCRouter()
    router.registerImmediate(IssuanceMethods.getProduct) { request, call in
        if request.id.hasPrefix("bad") { throw RPCError.invalidArgument("no product is called \(request.id)") }
        if request.id.hasPrefix("later") {
            return .later {
                running?.enter()
                defer { running?.leave() }
                try await Task.sleep(for: laterDelay)
                return Product(id: request.id, name: "later")
            }
        }
        return .answer(Product(id: request.id, name: "now", description: call.metadata[RPCMetadata.traceID] ?? ""))
    }
    router.register(name: IssuanceMethods.getCustomer.name, .immediate { call in
        let request: GetByIdRequest = try call.decode()
        guard let loop = call.eventLoop else { throw RPCError(.internal, "no event loop on the call") }
        return .pending(loop.scheduleTask(in: .milliseconds(5)) { Customer(id: request.id, name: "future").serializedBytes() }.futureResult)
    })
    return router
}

extension RPCTests {
    @Suite("Immediate handlers")
    struct ImmediateHandlerTests {
        @Test(arguments: Transport.allCases)
        func answersNowLaterFromAFutureAndWithAnError(_ transport: Transport) async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(immediateRouter(), on: [transport.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                let now = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "now-1"), metadata: [RPCMetadata.traceID: "t-1"])
                #expect(now == Product(id: "now-1", name: "now", description: "t-1"))
                let later = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "later-1"))
                #expect(later == Product(id: "later-1", name: "later"))
                let future = try await client.call(IssuanceMethods.getCustomer, GetByIdRequest(id: "cust-1"))
                #expect(future == Customer(id: "cust-1", name: "future"))
                let code = await rpcCode { _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "bad-1")) }
                #expect(code == .invalidArgument)
                await client.close()
            }
        }

        /// Answers of one read leave in one flush: a burst of pipelined calls all come back,
        /// each under its own id, whichever way each was answered.
        @Test func pipelinedBurstIsAnsweredCallByCall() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(immediateRouter(), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let raw = try await RawConnection.connect(endpoints[0])
                var bytes: [UInt8] = []
                let ids = ["now", "later", "bad"].flatMap { kind in (0..<50).map { "\(kind)-\($0)" } }
                for (index, id) in ids.enumerated() {
                    let request = Envelope(callId: UInt64(index + 1), kind: .request, method: IssuanceMethods.getProduct.name,
                                           payload: GetByIdRequest(id: id).serializedBytes())
                    bytes += frame(request)
                }
                try await raw.send(bytes)
                var answered: [UInt64: Envelope] = [:]
                for _ in ids {
                    let reply = try #require(try await raw.nextEnvelope(), "\(answered.count) of \(ids.count) calls answered")
                    answered[reply.callId] = reply
                }
                for (index, id) in ids.enumerated() {
                    let reply = try #require(answered[UInt64(index + 1)], "no answer for \(id)")
                    if id.hasPrefix("bad") {
                        #expect(reply.status?.code == .invalidArgument)
                    } else {
                        #expect(reply.status?.code == .ok)
                        #expect(try Product(serializedBytes: reply.payload).id == id)
                    }
                }
                await raw.close()
            }
        }

        /// A second request under an id still in flight breaks the protocol: the peer hears
        /// why on call id 0, the first call still answers, then the connection closes.
        @Test func aCallIdAlreadyInFlightIsRefused() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(immediateRouter(laterDelay: .milliseconds(200)), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let raw = try await RawConnection.connect(endpoints[0])
                let request = Envelope(callId: 7, kind: .request, method: IssuanceMethods.getProduct.name,
                                       payload: GetByIdRequest(id: "later-7").serializedBytes())
                try await raw.send(frame(request) + frame(request))
                let first = try #require(try await raw.nextEnvelope())
                let second = try #require(try await raw.nextEnvelope())
                #expect(first.callId == 0 && first.status?.code == .invalidArgument, "the repeated id is refused at once")
                #expect(second.callId == 7 && second.status?.code == .ok, "the first call still answers")
                #expect(await raw.closedByServer(within: .seconds(2)))
                await raw.close()
            }
        }

        /// A client sending far more calls than a connection may hold in flight gets every
        /// answer, while the server runs at most its limit at once (it stops reading meanwhile).
        @Test func callsBeyondTheConnectionLimitWaitAndAreAllAnswered() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            let running = Concurrency()
            try await withServer(immediateRouter(running: running, laterDelay: .milliseconds(20)), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let raw = try await RawConnection.connect(endpoints[0])
                let total = 2_500
                var bytes: [UInt8] = []
                for index in 0..<total {
                    let request = Envelope(callId: UInt64(index + 1), kind: .request, method: IssuanceMethods.getProduct.name,
                                           payload: GetByIdRequest(id: "later-\(index)").serializedBytes())
                    bytes += frame(request)
                }
                try await raw.send(bytes)
                var seen = Set<UInt64>()
                for _ in 0..<total {
                    let reply = try #require(try await raw.nextEnvelope(within: .seconds(20)), "\(seen.count) of \(total) answered")
                    #expect(reply.status?.code == .ok)
                    seen.insert(reply.callId)
                }
                #expect(seen.count == total)
                #expect(running.most <= 1024, "\(running.most) handlers ran at once on one connection")
                #expect(running.most > 1, "calls on one connection should run concurrently")
                await raw.close()
            }
        }
    }
}

extension RPCTests {
    @Suite("Client event-loop affinity")
    struct ClientAffinityTests {
        /// A call made on an event loop is answered on that loop: the client picked one of
        /// its connections there, so the answer needs no hop between threads.
        @Test func callsMadeOnAnEventLoopUseAConnectionOnThatLoop() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(immediateRouter(), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 3), group: group)
                for loop in group.makeIterator() {
                    for attempt in 0..<4 {
                        let answer = client.callRawFuture(
                            IssuanceMethods.getProduct.name, payload: GetByIdRequest(id: "now-\(attempt)").serializedBytes(),
                            metadata: [:], deadline: .now + .seconds(5), on: loop)
                        #expect(answer.eventLoop === loop)
                        #expect(try Product(serializedBytes: try await answer.get()).id == "now-\(attempt)")
                    }
                }
                let expired = client.callRawFuture(
                    IssuanceMethods.getProduct.name, payload: [], metadata: [:], deadline: .now - .seconds(1), on: nil)
                await #expect(throws: RPCError.self) { try await expired.get() }
                await client.close()
                try await group.shutdownGracefully()
            }
        }
    }
}

extension RPCTests.ImmediateHandlerTests {
    /// While the server holds reading (its fill of calls in flight), a frame left half read
    /// is not the peer stalling: the connection stays open and every answer arrives.
    @Test func heldReadingDoesNotCountAsAStalledFrame() async throws {
        let directory = TemporaryFolder()
        defer { directory.remove() }
        let limits = FrameLimits(partialFrameTimeout: .seconds(1))
        try await withServer(immediateRouter(laterDelay: .seconds(3)), on: [Transport.unix.endpoint(in: directory)], limits: limits) { endpoints in
            let raw = try await RawConnection.connect(endpoints[0])
            let total = 1_100
            var bytes: [UInt8] = []
            for index in 0..<total {
                let request = Envelope(callId: UInt64(index + 1), kind: .request, method: IssuanceMethods.getProduct.name,
                                       payload: GetByIdRequest(id: "later-\(index)").serializedBytes())
                bytes += frame(request)
            }
            // And the first two bytes of one more frame: it is finished only once reading has
            // gone on, long after the partial-frame timeout.
            let last = frame(Envelope(callId: UInt64(total + 1), kind: .request, method: IssuanceMethods.getProduct.name,
                                      payload: GetByIdRequest(id: "now-last").serializedBytes()))
            try await raw.send(bytes + last.prefix(2))
            // The first answer comes once the held calls finish, three times the timeout
            // later; reading goes on from then, so the rest of the frame is sent at once
            // (waiting for every answer first would be the client stalling).
            var answered = 0
            let first = try #require(try await raw.nextEnvelope(within: .seconds(10)), "no answer: the connection closed while reading was held")
            #expect(first.status?.code == .ok)
            answered += 1
            try await raw.send(Array(last.dropFirst(2)))
            while answered < total + 1, let reply = try await raw.nextEnvelope(within: .seconds(10)) {
                #expect(reply.status?.code == .ok)
                answered += 1
            }
            #expect(answered == total + 1, "the connection closed after \(answered) answers")
            await raw.close()
        }
    }
}

extension RPCTests.ImmediateHandlerTests {
    /// Calls still waiting for room when their caller hangs up never start: the caller
    /// has been told they failed, and may retry them elsewhere.
    @Test func waitingCallsOfAClosedConnectionNeverStart() async throws {
        let directory = TemporaryFolder()
        defer { directory.remove() }
        let running = Concurrency()
        try await withServer(immediateRouter(running: running, laterDelay: .milliseconds(300)), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
            let raw = try await RawConnection.connect(endpoints[0])
            var bytes: [UInt8] = []
            for index in 0..<1_500 {
                bytes += frame(Envelope(callId: UInt64(index + 1), kind: .request, method: IssuanceMethods.getProduct.name,
                                        payload: GetByIdRequest(id: "later-\(index)").serializedBytes()))
            }
            try await raw.send(bytes)
            #expect(await eventually(within: .seconds(5)) { running.total >= 1_024 })
            await raw.close()
            // Calls left waiting would start as the running ones finish and keep the count up.
            #expect(await eventually(within: .seconds(30)) { running.current == 0 })
            #expect(running.total == 1_024, "\(running.total) calls started; only those running when the caller left should have")
        }
    }
}
