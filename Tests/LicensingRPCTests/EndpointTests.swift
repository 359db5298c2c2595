import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

extension RPCTests {
    @Suite("Endpoint parsing")
    struct EndpointTests {
        @Test(arguments: [
            ("unix:/x", Endpoint.unix(path: "/x")),
            ("unix:/run/license-manager/issuance.sock", .unix(path: "/run/license-manager/issuance.sock")),
            ("unix:relative.sock", .unix(path: "relative.sock")),
            ("localhost:8080", .tcp(host: "localhost", port: 8080)),
            ("127.0.0.1:0", .tcp(host: "127.0.0.1", port: 0)),
            ("tcp://issuance.internal:7001", .tcp(host: "issuance.internal", port: 7001)),
            ("tcp://10.1.2.3:65535", .tcp(host: "10.1.2.3", port: 65535)),
            ("[::1]:80", .tcp(host: "::1", port: 80)),
            ("tcp://[fe80::1%eth0]:443", .tcp(host: "fe80::1%eth0", port: 443)),
        ])
        func parses(_ text: String, _ expected: Endpoint) throws {
            let parsed = try Endpoint(parsing: text)
            #expect(parsed == expected)
            // The description parses back to the same endpoint.
            #expect(try Endpoint(parsing: parsed.description) == parsed)
        }

        @Test func descriptions() {
            #expect(Endpoint.unix(path: "/x").description == "unix:/x")
            #expect(Endpoint.tcp(host: "localhost", port: 1).description == "localhost:1")
            #expect(Endpoint.tcp(host: "::1", port: 80).description == "[::1]:80")
        }

        @Test(arguments: [
            "",
            "unix:",
            "localhost",
            "localhost:",
            ":80",
            "tcp://",
            "tcp://:80",
            "host:65536",
            "host:-1",
            "host:http",
            "host:80x",
            "host:+80",
            "host: 80",
            "[::1]",
            "[]:80",
            "[::1:80",
            "::1]:80",
            "http://host:80",
            "tcp://host/path:80",
            "a b:80",
        ])
        func rejects(_ text: String) {
            #expect(throws: RPCError.self, "\"\(text)\" was accepted") { try Endpoint(parsing: text) }
            if let error = try? #require(throws: RPCError.self, performing: { try Endpoint(parsing: text) }) {
                #expect(error.code == .invalidArgument)
            }
        }
    }
}

/// A connect that fails says which address was tried, that nothing listens there, and what to do.
@Suite struct ConnectFailureTests {
    @Test func aMissingSocketSaysNothingListensThere() async throws {
        let client = RPCClient(endpoint: .unix(path: "/tmp/lm-no-such-\(UInt32.random(in: 0...UInt32.max)).sock"))
        defer { Task { await client.close() } }
        do {
            _ = try await client.call(HealthMethods.check, HealthCheckRequest())
            Issue.record("a call to a missing socket succeeded")
        } catch let error as RPCError {
            #expect(error.code == .unavailable)
            #expect(error.message.hasPrefix("nothing listens at unix:/tmp/lm-no-such-"), "\(error.message)")
            #expect(error.message.contains("deploy/up"))
            #expect(!error.message.contains("descriptor:addr:size"))
        }
    }

    @Test func aClosedPortSaysConnectionRefused() async throws {
        let client = RPCClient(endpoint: .tcp(host: "127.0.0.1", port: 1))
        defer { Task { await client.close() } }
        do {
            _ = try await client.call(HealthMethods.check, HealthCheckRequest())
            Issue.record("a call to a closed port succeeded")
        } catch let error as RPCError {
            #expect(error.message.hasPrefix("nothing listens at 127.0.0.1:1 (connection refused)"), "\(error.message)")
        }
    }
}

@Suite struct BindFailureTests {
    /// A port in use is named, and the second server never says it listens.
    @Test func aPortInUseIsNamed() async throws {
        try await withServer(RPCRouter(), on: [.tcp(host: "127.0.0.1", port: 0)]) { bound in
            let second = RPCServer(router: RPCRouter(), configuration: RPCServerConfiguration(endpoints: [bound[0]]), logger: testLogger)
            do {
                try await second.run()
                Issue.record("a second server listened on \(bound[0])")
            } catch let error as RPCError {
                #expect(error.message == "cannot listen on \(bound[0]): the address is already in use by another process (choose another with --listen)")
            }
            await #expect(throws: RPCError.self) { _ = try await second.listeningEndpoints }
        }
    }
}
