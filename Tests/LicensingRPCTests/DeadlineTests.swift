import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

extension RPCTests {
    @Suite("Deadlines and cancellation")
    struct DeadlineTests {
        static func slowRouter(started: Counter) -> RPCRouter {
            echoRouter(delay: { request in
                if request.id.hasPrefix("slow") { try await Task.sleep(for: .seconds(10)) }
            }, started: started)
        }

        @Test(arguments: Transport.allCases)
        func handlerSlowerThanTheTimeoutGivesDeadlineExceeded(_ transport: Transport) async throws {
            let started = Counter()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.slowRouter(started: started), on: [transport.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                _ = try await client.call(HealthMethods.check, HealthCheckRequest())  // connect first
                let start = ContinuousClock.now
                let code = await rpcCode {
                    _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "slow"), timeout: .milliseconds(200))
                }
                let elapsed = ContinuousClock.now - start
                #expect(code == .deadlineExceeded)
                #expect(elapsed >= .milliseconds(190))
                // Well before the handler's 10 s: the deadline ended the call, not the handler.
                // (No tighter bound: a loaded machine may take its time.)
                #expect(elapsed < .seconds(5), "the deadline error came after \(elapsed)")
                #expect(started.value == 1)
                // The connection is still usable.
                #expect(try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "fast")).id == "fast")
                await client.close()
            }
        }

        @Test func streamDeadlineEndsTheStreamWithDeadlineExceeded() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(StreamingTests.feedRouter(), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                let start = ContinuousClock.now
                var received = 0
                let code = await rpcCode {
                    for try await _ in try await client.stream(
                        IssuanceMethods.watchChanges, ChangesRequest(limit: 0), timeout: .milliseconds(200)) {
                        received += 1
                    }
                }
                #expect(code == .deadlineExceeded)
                #expect(received > 0)
                // The feed never ends by itself: only the deadline can have ended it.
                #expect(ContinuousClock.now - start < .seconds(5))
                await client.close()
            }
        }

        @Test func expiredDeadlineFailsBeforeSending() async throws {
            let started = Counter()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.slowRouter(started: started), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                let code = await rpcCode {
                    _ = try await client.callRaw(
                        IssuanceMethods.getProduct.name, payload: [], metadata: [:], deadline: .now - .seconds(1))
                }
                #expect(code == .deadlineExceeded)
                #expect(started.value == 0)
                await client.close()
            }
        }

        @Test(arguments: Transport.allCases)
        func cancellingTheCallerGivesCancelled(_ transport: Transport) async throws {
            let started = Counter()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.slowRouter(started: started), on: [transport.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                let call = Task {
                    try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "slow"), timeout: .seconds(30))
                }
                #expect(await eventually(within: .seconds(5)) { started.value == 1 })
                let start = ContinuousClock.now
                call.cancel()
                let result = await call.result
                let elapsed = ContinuousClock.now - start
                switch result {
                case .success: Issue.record("a cancelled call succeeded")
                case .failure(let error):
                    #expect((error as? RPCError)?.code == .cancelled, "got \(error)")
                }
                // Well before the handler's 10 s: cancellation, not the handler, ended the call.
                #expect(elapsed < .seconds(5), "cancellation took \(elapsed)")
                // Other calls on the same connection are unaffected.
                let next = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "next"))
                #expect(next.id == "next")
                await client.close()
            }
        }

        @Test func cancelledBeforeStartingGivesCancelled() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(echoRouter(), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                _ = try await client.call(HealthMethods.check, HealthCheckRequest())
                let call = Task {
                    withUnsafeCurrentTask { $0?.cancel() }
                    return try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "x"))
                }
                let result = await call.result
                if case .failure(let error) = result {
                    #expect((error as? RPCError)?.code == .cancelled, "got \(error)")
                } else {
                    Issue.record("a call made from a cancelled task succeeded")
                }
                await client.close()
            }
        }

        @Test func closingTheClientFailsCallsInFlightWithUnavailable() async throws {
            let started = Counter()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.slowRouter(started: started), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                let call = Task { try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "slow")) }
                #expect(await eventually(within: .seconds(5)) { started.value == 1 })
                await client.close()
                let result = await call.result
                if case .failure(let error) = result {
                    #expect((error as? RPCError)?.code == .unavailable, "got \(error)")
                } else {
                    Issue.record("a call succeeded after its client closed")
                }
                let after = await rpcCode { _ = try await client.call(HealthMethods.check, HealthCheckRequest()) }
                #expect(after == .unavailable)
            }
        }
    }
}
