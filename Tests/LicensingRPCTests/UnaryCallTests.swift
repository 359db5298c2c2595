import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

/// An echo: GetProduct answers with the id it was asked for and the caller's trace id.
/// `delay` runs inside the handler before it answers.
func echoRouter(delay: (@Sendable (GetByIdRequest) async throws -> Void)? = nil, started: Counter? = nil) -> RPCRouter {
    var router = RPCRouter()
    router.register(HealthMethods.check) { _, _ in
        HealthCheckResponse(service: "rpc-tests", status: .serving, version: "1")
    }
    router.register(IssuanceMethods.getProduct) { request, call in
        started?.increment()
        try await delay?(request)
        return Product(id: request.id, name: "echo", description: call.metadata[RPCMetadata.traceID] ?? "")
    }
    return router
}

extension RPCTests {
    @Suite("Unary calls")
    struct UnaryCallTests {
        @Test(arguments: Transport.allCases)
        func unaryCall(_ transport: Transport) async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(echoRouter(), on: [transport.endpoint(in: directory)]) { endpoints in
                if transport == .tcp {
                    guard case .tcp(_, let port) = endpoints[0] else { Issue.record("not TCP: \(endpoints)"); return }
                    #expect(port != 0, "port 0 must resolve to the bound port")
                }
                let client = RPCClient(endpoint: endpoints[0])
                defer { Task { await client.close() } }
                let health = try await client.call(HealthMethods.check, HealthCheckRequest())
                #expect(health == HealthCheckResponse(service: "rpc-tests", status: .serving, version: "1"))
                let product = try await client.call(
                    IssuanceMethods.getProduct, GetByIdRequest(id: "prod_42"), metadata: [RPCMetadata.traceID: "trace-7"])
                #expect(product == Product(id: "prod_42", name: "echo", description: "trace-7"))
                await client.close()
            }
        }

        @Test func serverListensOnUnixAndTCPAtOnce() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            let endpoints = [Transport.unix.endpoint(in: directory), Transport.tcp.endpoint(in: directory)]
            try await withServer(echoRouter(), on: endpoints) { bound in
                #expect(bound.count == 2)
                #expect(bound[0] == .unix(path: directory.socket()))
                for endpoint in bound {
                    let client = RPCClient(endpoint: endpoint)
                    let product = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "\(endpoint)"))
                    #expect(product.id == "\(endpoint)")
                    await client.close()
                }
            }
        }

        @Test func brokenConnectionIsReplacedOnTheNextCall() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            let endpoint = Transport.unix.endpoint(in: directory)
            let client = RPCClient(endpoint: endpoint, configuration: RPCClientConfiguration(connections: 1))
            try await withServer(echoRouter(), on: [endpoint]) { _ in
                let first = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "first"))
                #expect(first.id == "first")
            }
            // The server is gone: calls fail as UNAVAILABLE rather than hang.
            #expect(await rpcCode { _ = try await client.call(HealthMethods.check, HealthCheckRequest()) } == .unavailable)
            try await withServer(echoRouter(), on: [endpoint]) { _ in
                let second = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "second"))
                #expect(second.id == "second")
            }
            await client.close()
        }

        /// An answer too large for a frame fails its own call, not the connection it shares.
        @Test func answerOverTheFrameLimitFailsOnlyItsCall() async throws {
            var router = echoRouter(delay: { request in
                if request.id == "bystander" { try await Task.sleep(for: .milliseconds(200)) }
            })
            router.register(IssuanceMethods.getCustomer) { request, _ in
                Customer(id: request.id, name: String(repeating: "n", count: 8 * 1024))
            }
            router.registerStream(IssuanceMethods.watchChanges) { _, _, stream in
                try await stream.send(changeEvent(1))
                try await stream.send(ChangeEvent(seq: 2, action: String(repeating: "a", count: 8 * 1024)))
            }
            let limits = FrameLimits(maxFrameLength: 4 * 1024)
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(router, on: [Transport.unix.endpoint(in: directory)], limits: limits) { endpoints in
                let client = RPCClient(
                    endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1, limits: limits))
                let slow = Task {
                    try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "bystander"))
                }
                let code = await rpcCode { _ = try await client.call(IssuanceMethods.getCustomer, GetByIdRequest(id: "big")) }
                #expect(code == .resourceExhausted)
                let bystander = try await slow.value
                #expect(bystander.id == "bystander")
                let health = try await client.call(HealthMethods.check, HealthCheckRequest())
                #expect(health.status == .serving)
                // The same for a stream: the messages that fit arrive, then the call fails.
                var seqs: [UInt64] = []
                let streamed = await rpcCode {
                    for try await event in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest()) {
                        seqs.append(event.seq)
                    }
                }
                #expect(seqs == [1])
                #expect(streamed == .resourceExhausted)
                let again = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "again"))
                #expect(again.id == "again")
                await client.close()
            }
        }

        /// Many calls on one connection, each answered when it finishes: the first sent
        /// waits longest, so the answers come back in the opposite order.
        @Test(arguments: Transport.allCases)
        func callsInFlightOnOneConnectionAreAnsweredOutOfOrder(_ transport: Transport) async throws {
            let count = 16
            let arrived = Counter()
            let router = echoRouter(
                delay: { request in
                    // Hold every call until all are in flight at once, then finish in reverse.
                    let index = Int(request.id)!
                    _ = await eventually(within: .seconds(5)) { arrived.value == count }
                    try await Task.sleep(for: .milliseconds(30 * (count - index)))
                },
                started: arrived)
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(router, on: [transport.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                // Open the connection first so that every call shares it.
                _ = try await client.call(HealthMethods.check, HealthCheckRequest())
                let order = Recorder<Int>()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<count {
                        group.addTask {
                            let product = try await client.call(
                                IssuanceMethods.getProduct, GetByIdRequest(id: "\(index)"), metadata: [RPCMetadata.traceID: "t\(index)"])
                            #expect(product == Product(id: "\(index)", name: "echo", description: "t\(index)"))
                            order.append(index)
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(arrived.value == count)
                let received = order.values
                #expect(received.sorted() == Array(0..<count))
                // The last call (30 ms) must overtake the first (480 ms).
                let firstIndex = try #require(received.firstIndex(of: 0))
                let lastIndex = try #require(received.firstIndex(of: count - 1))
                #expect(lastIndex < firstIndex, "answers came back in sending order: \(received)")
                #expect(received != Array(0..<count))
                await client.close()
            }
        }
    }
}
