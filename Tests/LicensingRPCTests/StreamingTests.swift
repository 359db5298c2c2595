import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

func changeEvent(_ seq: UInt64) -> ChangeEvent {
    ChangeEvent(seq: seq, kind: .license, action: "license.issued", subject: .license(License(id: "lic_\(seq)", features: ["f\(seq)"])))
}

extension RPCTests {
    @Suite("Server streaming")
    struct StreamingTests {
        /// WatchChanges sends `limit` events after `afterSeq`, then ends; limit 0 = forever.
        static func feedRouter(started: Flag? = nil, ended: Flag? = nil, endedCancelled: Flag? = nil, failAfter: Int? = nil) -> RPCRouter {
            var router = echoRouter()
            router.registerStream(IssuanceMethods.watchChanges) { request, _, stream in
                started?.set()
                defer {
                    if Task.isCancelled { endedCancelled?.set() }
                    ended?.set()
                }
                var seq = request.afterSeq
                var sent = 0
                while request.limit == 0 || sent < request.limit {
                    if let failAfter, sent == failAfter { throw RPCError.notFound("feed \(request.afterSeq) is gone") }
                    seq += 1
                    try await stream.send(changeEvent(seq))
                    sent += 1
                    if request.limit == 0 { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
            return router
        }

        @Test(arguments: Transport.allCases)
        func streamSendsAllMessagesThenEnds(_ transport: Transport) async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.feedRouter(), on: [transport.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                var received: [ChangeEvent] = []
                for try await event in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 100, limit: 50)) {
                    received.append(event)
                }
                #expect(received == (101...150).map(changeEvent))

                var one = 0
                for try await _ in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 1, limit: 1)) {
                    one += 1
                }
                #expect(one == 1)
                await client.close()
            }
        }

        @Test func streamEndingInAnErrorThrowsItsStatus() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.feedRouter(failAfter: 3), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                var received: [UInt64] = []
                let code = await rpcCode {
                    for try await event in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 0, limit: 10)) {
                        received.append(event.seq)
                    }
                }
                #expect(received == [1, 2, 3])
                #expect(code == .notFound)
                await client.close()
            }
        }

        @Test(arguments: Transport.allCases)
        func consumerStoppingEarlyStopsTheHandler(_ transport: Transport) async throws {
            let started = Flag()
            let ended = Flag()
            let endedCancelled = Flag()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            let router = Self.feedRouter(started: started, ended: ended, endedCancelled: endedCancelled)
            try await withServer(router, on: [transport.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                do {
                    let events = try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 0, limit: 0))
                    var seen = 0
                    for try await event in events {
                        seen += 1
                        #expect(event.seq == UInt64(seen))
                        if seen == 3 { break }
                    }
                }
                #expect(await started.wait())
                #expect(await ended.wait(within: .seconds(3)), "the handler kept streaming after the consumer stopped")
                #expect(endedCancelled.isSet, "the handler ended, but not through cancellation")
                // The connection is still good for other calls.
                #expect(try await client.call(HealthMethods.check, HealthCheckRequest()).status == .serving)
                await client.close()
            }
        }

        @Test func consumerTaskCancellationStopsTheHandler() async throws {
            let ended = Flag()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.feedRouter(ended: ended), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                let received = Counter()
                let consumer = Task {
                    for try await _ in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(limit: 0)) {
                        received.increment()
                    }
                }
                #expect(await eventually(within: .seconds(5)) { received.value >= 2 })
                consumer.cancel()
                #expect(await finishes(consumer, within: .seconds(2)))
                #expect(await ended.wait(within: .seconds(3)), "the handler kept streaming after the consumer was cancelled")
                await client.close()
            }
        }

        /// A CANCEL that arrives together with its REQUEST (a caller that gives up at once)
        /// must still stop the call: the feed would otherwise run until the connection closes.
        @Test func cancelArrivingWithItsRequestStopsTheHandler() async throws {
            let handlers = Counter()
            let endedHandlers = Counter()
            var router = echoRouter()
            router.registerStream(IssuanceMethods.watchChanges) { _, _, stream in
                handlers.increment()
                defer { endedHandlers.increment() }
                var seq: UInt64 = 0
                while true {
                    seq += 1
                    try await stream.send(changeEvent(seq))
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(router, on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let raw = try await RawConnection.connect(endpoints[0])
                let calls: [UInt64] = Array(1...20)
                for id in calls {
                    let request = Envelope(
                        callId: id, kind: .request, method: IssuanceMethods.watchChanges.name,
                        payload: ChangesRequest(limit: 0).serializedBytes(), timeoutMicros: 60_000_000)
                    // Both frames in one write: the server reads them back to back.
                    try await raw.send(frame(request) + frame(Envelope(callId: id, kind: .cancel)))
                }
                var ends: [UInt64: StatusCode] = [:]
                // Feeds that missed their CANCEL keep sending, so read for a bounded time.
                let giveUp = ContinuousClock.now + .seconds(3)
                while ends.count < calls.count, ContinuousClock.now < giveUp,
                    let envelope = try await raw.nextEnvelope(within: .seconds(1))
                {
                    if envelope.kind == .streamEnd { ends[envelope.callId] = envelope.status?.code }
                }
                #expect(ends.keys.sorted() == calls, "calls never ended after their CANCEL: \(Set(calls).subtracting(ends.keys).sorted())")
                #expect(ends.values.allSatisfy { $0 == .cancelled }, "\(ends)")
                #expect(await eventually(within: .seconds(2)) { endedHandlers.value == handlers.value })
                await raw.close()
            }
        }
    }
}
