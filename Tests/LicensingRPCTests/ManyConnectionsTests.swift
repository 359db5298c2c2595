import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RPCTests {
    @Suite("Many connections")
    struct ManyConnectionsTests {
        static var openFileLimit: Int {
            var limit = rlimit()
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            return Int(limit.rlim_cur)
        }

        /// 1,000 clients, each with its own connection, all open at once, each making calls.
        @Test(arguments: Transport.allCases)
        func thousandConcurrentConnections(_ transport: Transport) async throws {
            let connections = 1_000
            let callsEach = 3
            // Both ends live in this process, plus the event loops' own descriptors.
            try #require(Self.openFileLimit >= 2 * connections + 200, "ulimit -n is \(Self.openFileLimit): too low for \(connections) connections")

            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(echoRouter(), on: [transport.endpoint(in: directory)]) { endpoints in
                let endpoint = endpoints[0]
                let connected = Counter()
                let answered = Counter()
                let failures = Recorder<String>()
                let start = ContinuousClock.now
                await withTaskGroup(of: Void.self) { group in
                    for index in 0..<connections {
                        group.addTask {
                            let client = RPCClient(
                                endpoint: endpoint,
                                configuration: RPCClientConfiguration(connections: 1, connectTimeout: .seconds(30), defaultTimeout: .seconds(60)))
                            do {
                                for call in 0..<callsEach {
                                    let id = "\(index)-\(call)"
                                    let product = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: id))
                                    if product.id == id { answered.increment() } else { failures.append("\(id) got \(product.id)") }
                                    if call == 0 {
                                        // Keep every connection open until all of them are.
                                        connected.increment()
                                        _ = await eventually(within: .seconds(60), every: .milliseconds(20)) { connected.value == connections }
                                    }
                                }
                            } catch {
                                failures.append("client \(index): \(error)")
                                connected.increment()
                            }
                            await client.close()
                        }
                    }
                }
                let elapsed = ContinuousClock.now - start
                #expect(failures.values.isEmpty, "\(failures.values.count) failures, first: \(failures.values.prefix(5))")
                #expect(answered.value == connections * callsEach, "answered \(answered.value) in \(elapsed)")
                // The server still answers afterwards.
                let client = RPCClient(endpoint: endpoint)
                let health = try await client.call(HealthMethods.check, HealthCheckRequest())
                #expect(health.status == .serving)
                await client.close()
            }
        }
    }
}
