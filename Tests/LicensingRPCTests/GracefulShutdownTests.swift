import Foundation
import LicensingRPC
import LicensingWire
import ServiceLifecycle
import NIOCore
import NIOPosix
import LicensingTestSupport
import Testing

extension RPCTests {
    @Suite("Graceful shutdown")
    struct GracefulShutdownTests {
        @Test func inFlightCallsFinishThenTheServerStops() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            let socketPath = directory.socket()
            let started = Counter()
            let release = Flag()
            let router = echoRouter(delay: { request in
                if request.id.hasPrefix("slow") {
                    // Finishes only once the test says so, after shutdown has begun.
                    _ = await release.wait(within: .seconds(10))
                }
            }, started: started)
            let server = RPCServer(
                router: router,
                configuration: RPCServerConfiguration(endpoints: [.unix(path: socketPath), .tcp(host: "127.0.0.1", port: 0)]),
                logger: testLogger)
            let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [server], logger: testLogger))
            let running = Task { try await group.run() }
            defer { running.cancel() }

            let endpoints = try await server.listeningEndpoints
            #expect(FileManager.default.fileExists(atPath: socketPath))
            let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
            let tcpClient = RPCClient(endpoint: endpoints[1], configuration: RPCClientConfiguration(connections: 1))
            _ = try await tcpClient.call(HealthMethods.check, HealthCheckRequest())

            let slow = Task { try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "slow-1"), timeout: .seconds(20)) }
            #expect(await eventually(within: .seconds(5)) { started.value == 1 })

            await group.triggerGracefulShutdown()
            // The listeners close at once: the socket file goes before the slow call ends.
            #expect(await eventually(within: .seconds(5)) { !FileManager.default.fileExists(atPath: socketPath) },
                "the Unix socket file is still there after shutdown began")
            // It does not stop while the call is in flight.
            #expect(!(await finishes(running, within: .milliseconds(200))), "the server stopped before its call in flight finished")
            release.set()

            let product = try await slow.value
            #expect(product.id == "slow-1", "the call in flight did not complete")
            #expect(await finishes(running, within: .seconds(5)), "the service group did not stop after its calls finished")
            if case .failure(let error) = await running.result { Issue.record("the server failed: \(error)") }

            #expect(!FileManager.default.fileExists(atPath: socketPath))
            // New connections fail, over Unix and TCP.
            let late = RPCClient(endpoint: endpoints[0])
            #expect(await rpcCode { _ = try await late.call(HealthMethods.check, HealthCheckRequest()) } == .unavailable)
            await late.close()
            let lateTCP = RPCClient(endpoint: endpoints[1])
            #expect(await rpcCode { _ = try await lateTCP.call(HealthMethods.check, HealthCheckRequest()) } == .unavailable)
            await lateTCP.close()
            // The old connections are closed as well.
            #expect(await rpcCode { _ = try await tcpClient.call(HealthMethods.check, HealthCheckRequest()) } == .unavailable)
            await client.close()
            await tcpClient.close()
        }

        @Test func openFeedsEndOnGracefulShutdown() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            let ended = Flag()
            let server = RPCServer(
                router: StreamingTests.feedRouter(ended: ended),
                configuration: RPCServerConfiguration(endpoints: [.unix(path: directory.socket())]),
                logger: testLogger)
            let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [server], logger: testLogger))
            let running = Task { try await group.run() }
            defer { running.cancel() }
            let endpoints = try await server.listeningEndpoints
            let client = RPCClient(endpoint: endpoints[0])
            let received = Counter()
            let consumer = Task {
                for try await _ in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(limit: 0)) {
                    received.increment()
                }
            }
            #expect(await eventually(within: .seconds(5)) { received.value >= 2 })
            await group.triggerGracefulShutdown()
            #expect(await ended.wait(within: .seconds(3)), "a feed kept the server from stopping")
            #expect(await finishes(running, within: .seconds(5)))
            // The consumer learns that its feed ended (the status says why).
            #expect(await finishes(consumer, within: .seconds(5)))
            if case .failure(let error) = await consumer.result {
                #expect([StatusCode.cancelled, .unavailable].contains((error as? RPCError)?.code), "got \(error)")
            }
            await client.close()
        }
    }
}

extension RPCTests.GracefulShutdownTests {
    /// A feed whose peer stops reading waits on a write that will not finish; stopping
    /// must not wait for it forever.
    @Test func aFeedToAPeerThatStopsReadingDoesNotHoldUpStopping() async throws {
        let directory = TemporaryFolder()
        defer { directory.remove() }
        var router = RPCRouter()
        let sent = Counter()
        router.registerStream(IssuanceMethods.watchChanges) { _, _, stream in
            let big = ChangeEvent(seq: 1, keyHash: String(repeating: "x", count: 60_000))
            while true {
                try await stream.send(big)
                sent.increment()
            }
        }
        let server = RPCServer(router: router, configuration: RPCServerConfiguration(endpoints: [.unix(path: directory.socket())]), logger: testLogger)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [server], logger: testLogger))
        let running = Task { try await group.run() }
        defer { running.cancel() }
        let endpoints = try await server.listeningEndpoints
        // A peer that sends a request and then never reads.
        let silent = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: false)
            .connect(unixDomainSocketPath: directory.socket()).get()
        let request = Envelope(callId: 1, kind: .request, method: IssuanceMethods.watchChanges.name, payload: ChangesRequest().serializedBytes())
        try await silent.writeAndFlush(ByteBuffer(bytes: frame(request))).get()
        _ = endpoints
        // The feed runs and fills what the socket holds; its next write waits for a reader.
        #expect(await eventually(within: .seconds(30)) { sent.value > 0 })
        await group.triggerGracefulShutdown()
        #expect(await finishes(running, within: .seconds(5)), "the server waited on a feed nobody reads")
        try? await silent.close().get()
    }
}
