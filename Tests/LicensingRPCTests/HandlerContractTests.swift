import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

struct SomeInternalFailure: Error {}

extension RPCTests {
    /// What a handler sees of its call, and how what it throws reaches the caller.
    @Suite("Handler contract")
    struct HandlerContractTests {
        static func router(seen: Recorder<ServerCall>) -> RPCRouter {
            var router = RPCRouter()
            router.register(IssuanceMethods.getProduct) { request, call in
                seen.append(call)
                switch request.id {
                case "rpc-error": throw RPCError.notFound("product \(request.id) does not exist")
                case "busy": throw RPCError(.resourceExhausted, "slow down", metadata: [RPCMetadata.retryAfter: "3"])
                case "internal": throw SomeInternalFailure()
                case "cancelled": throw CancellationError()
                default: return Product(id: request.id)
                }
            }
            return router
        }

        @Test func errorsBecomeStatuses() async throws {
            let seen = Recorder<ServerCall>()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(Self.router(seen: seen), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                do {
                    _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "rpc-error"))
                    Issue.record("no error")
                } catch let error as RPCError {
                    #expect(error == RPCError(.notFound, "product rpc-error does not exist"))
                }
                do {
                    _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "internal"))
                    Issue.record("no error")
                } catch let error as RPCError {
                    #expect(error.code == .internal)
                    // Internal details stay on the server.
                    #expect(!error.message.contains("SomeInternalFailure"))
                }
                do {
                    _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "busy"))
                    Issue.record("no error")
                } catch let error as RPCError {
                    // Metadata sent with an error status reaches the caller.
                    #expect(error.code == .resourceExhausted)
                    #expect(error.metadata[RPCMetadata.retryAfter] == "3")
                }
                let cancelled = await rpcCode { _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "cancelled")) }
                #expect(cancelled == .cancelled)
                await client.close()
            }
        }

        @Test func deadlineAndMetadataReachTheHandler() async throws {
            let seen = Recorder<ServerCall>()
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(
                Self.router(seen: seen), on: [Transport.unix.endpoint(in: directory)], defaultTimeout: .seconds(7)
            ) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                let before = ContinuousClock.now
                _ = try await client.call(
                    IssuanceMethods.getProduct, GetByIdRequest(id: "a"),
                    metadata: [RPCMetadata.apiKey: "lm_key", RPCMetadata.traceID: "t-1"], timeout: .seconds(3))
                let call = try #require(seen.values.last)
                #expect(call.method == IssuanceMethods.getProduct.name)
                #expect(call.metadata[RPCMetadata.apiKey] == "lm_key")
                #expect(call.metadata[RPCMetadata.traceID] == "t-1")
                #expect(call.deadline > before + .milliseconds(2500) && call.deadline <= ContinuousClock.now + .seconds(3))
                await client.close()

                // No timeout on the wire: the server's default applies.
                let raw = try await RawConnection.connect(endpoints[0])
                let rawStart = ContinuousClock.now
                try await raw.send(frame(Envelope(
                    callId: 1, kind: .request, method: IssuanceMethods.getProduct.name,
                    payload: GetByIdRequest(id: "b").serializedBytes(), timeoutMicros: 0)))
                #expect(try await raw.nextEnvelope()?.status?.code == .ok)
                let defaulted = try #require(seen.values.last)
                #expect(defaulted.deadline > rawStart + .seconds(6) && defaulted.deadline <= ContinuousClock.now + .seconds(7))
                await raw.close()
            }
        }

        @Test func severalStreamsInterleaveOnOneConnection() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            var router = RPCRouter()
            router.registerStream(IssuanceMethods.watchChanges) { request, _, stream in
                for seq in (request.afterSeq + 1)...(request.afterSeq + UInt64(request.limit)) {
                    try await stream.send(changeEvent(seq))
                    if seq % 10 == 0 { await Task.yield() }
                }
            }
            try await withServer(router, on: [Transport.tcp.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                try await withThrowingTaskGroup(of: (Int, [UInt64]).self) { group in
                    for stream in 0..<8 {
                        group.addTask {
                            var seqs: [UInt64] = []
                            let base = UInt64(stream * 1_000)
                            for try await event in try await client.stream(
                                IssuanceMethods.watchChanges, ChangesRequest(afterSeq: base, limit: 200)) {
                                seqs.append(event.seq)
                            }
                            return (stream, seqs)
                        }
                    }
                    for try await (stream, seqs) in group {
                        let base = UInt64(stream * 1_000)
                        #expect(seqs == Array((base + 1)...(base + 200)), "stream \(stream)")
                    }
                }
                await client.close()
            }
        }

        @Test func metadataKeysAreUnique() {
            var metadata: RPCMetadata = ["authorization": "a", "x-lm-tenant": "t", "x-lm-role": "admin"]
            metadata["authorization"] = "b"
            #expect(metadata["authorization"] == "b")
            #expect(metadata.entries.filter { $0.key == "authorization" }.count == 1)
            metadata.removeAll(prefixed: RPCMetadata.gatewayPrefix)
            #expect(metadata.entries == [MetadataEntry(key: "authorization", value: "b")])
            metadata["authorization"] = nil
            #expect(metadata.entries.isEmpty)
        }

        @Test func routerKnowsItsMethods() {
            var router = RPCRouter()
            router.register(HealthMethods.check) { _, _ in HealthCheckResponse() }
            router.registerStream(IssuanceMethods.watchChanges) { _, _, _ in }
            #expect(router.registeredMethods == [HealthMethods.check.name, IssuanceMethods.watchChanges.name].sorted())
            #expect(router.handler(for: "licensing.v1.Nope/Nope") == nil)
            guard case .serverStreaming = router.handler(for: IssuanceMethods.watchChanges.name) else {
                Issue.record("WatchChanges is not registered as streaming")
                return
            }
        }
    }
}
