import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

extension RPCTests {
    /// Each bad input goes over its own raw connection; a client on another connection,
    /// opened before, must still be answered afterwards.
    @Suite("Bad input")
    struct BadInputTests {
        static let limits = FrameLimits(maxFrameLength: 1024, partialFrameTimeout: .milliseconds(300))

        /// Runs `body` with a raw connection, then checks the healthy client.
        func withBadConnection(
            _ transport: Transport,
            limits: FrameLimits = BadInputTests.limits,
            router: RPCRouter = echoRouter(),
            _ body: (RawConnection, Endpoint) async throws -> Void
        ) async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(router, on: [transport.endpoint(in: directory)], limits: limits) { endpoints in
                let healthy = RPCClient(endpoint: endpoints[0], configuration: RPCClientConfiguration(connections: 1))
                #expect(try await healthy.call(IssuanceMethods.getProduct, GetByIdRequest(id: "before")).id == "before")
                let raw = try await RawConnection.connect(endpoints[0])
                try await body(raw, endpoints[0])
                await raw.close()
                #expect(try await healthy.call(IssuanceMethods.getProduct, GetByIdRequest(id: "after")).id == "after")
                await healthy.close()
                // And a connection opened afterwards works too.
                let fresh = RPCClient(endpoint: endpoints[0])
                #expect(try await fresh.call(HealthMethods.check, HealthCheckRequest()).status == .serving)
                await fresh.close()
            }
        }

        // (a)
        @Test(arguments: Transport.allCases)
        func lengthPrefixOverTheLimitClosesTheConnection(_ transport: Transport) async throws {
            try await withBadConnection(transport) { raw, _ in
                try await raw.send([0xFF, 0xFF, 0xFF, 0xF0])
                #expect(await raw.closedByServer(within: .seconds(2)), "the server kept a connection that announced a 4 GiB frame")
                #expect(raw.received.isEmpty)
            }
        }

        @Test func frameOfExactlyTheLimitIsAcceptedAndOneMoreIsNot() async throws {
            // An Envelope that encodes to exactly 1024 bytes, padded with metadata.
            func padded(_ size: Int) -> Envelope {
                var pad = 0
                while true {
                    let envelope = Envelope(
                        callId: 1, kind: .request, method: HealthMethods.check.name, timeoutMicros: 5_000_000,
                        metadata: [MetadataEntry(key: "pad", value: String(repeating: "x", count: pad))])
                    if envelope.serializedSize >= size {
                        #expect(envelope.serializedSize == size)
                        return envelope
                    }
                    pad += 1
                }
            }
            try await withBadConnection(.unix) { raw, endpoint in
                try await raw.send(frame(padded(1024)))
                let reply = try #require(try await raw.nextEnvelope())
                #expect(reply.callId == 1)
                #expect(reply.status?.code == .ok)

                let tooLong = try await RawConnection.connect(endpoint)
                try await tooLong.send(frame(padded(1025)))
                #expect(await tooLong.closedByServer(within: .seconds(2)))
                #expect(tooLong.received.isEmpty)
                await tooLong.close()
            }
        }

        // (b)
        @Test(arguments: Transport.allCases)
        func truncatedFrameThenEOF(_ transport: Transport) async throws {
            // A long stall timeout: the connection must end because of the EOF.
            let limits = FrameLimits(maxFrameLength: 1024, partialFrameTimeout: .seconds(30))
            try await withBadConnection(transport, limits: limits) { raw, _ in
                let whole = frame(Envelope(callId: 1, kind: .request, method: HealthMethods.check.name))
                try await raw.send(Array(whole.prefix(whole.count - 3)))
                try await raw.finishSending()
                #expect(await raw.closedByServer(within: .seconds(2)))
                #expect(raw.received.isEmpty, "a truncated request must not be answered")
            }
        }

        // (c)
        @Test(arguments: Transport.allCases, [1, 2, 3, 4])
        func randomBytes(_ transport: Transport, seed: UInt64) async throws {
            var rng = SplitMix64(seed: seed)
            let bytes = (0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) }
            try await withBadConnection(transport) { raw, _ in
                try await raw.send(bytes)
                #expect(await raw.closedByServer(within: .seconds(2)))
            }
        }

        @Test func randomBytesInsideAValidLengthPrefix() async throws {
            var rng = SplitMix64(seed: 99)
            for _ in 0..<5 {
                let bytes = (0..<200).map { _ in UInt8.random(in: 0...255, using: &rng) }
                try await withBadConnection(.unix) { raw, _ in
                    try await raw.send(frame(bytes))
                    // Refused as not an Envelope (INVALID_ARGUMENT on call 0, then closed) or, if
                    // the bytes happen to decode, answered on their call; never a hang or a crash.
                    let reply = try #require(try await raw.nextEnvelope(within: .seconds(10)), "no answer to 200 random bytes")
                    if let envelope = try? Envelope(serializedBytes: bytes), envelope.kind != .cancel {
                        #expect(reply.callId == envelope.callId)
                    } else {
                        #expect(reply.callId == 0)
                        #expect(reply.status?.code == .invalidArgument)
                        #expect(await raw.closedByServer(within: .seconds(10)))
                    }
                }
            }
        }

        // (d)
        @Test(arguments: Transport.allCases)
        func frameThatIsNotAnEnvelope(_ transport: Transport) async throws {
            try await withBadConnection(transport) { raw, _ in
                try await raw.send(frame([0xFF, 0xFF, 0xFF]))
                let reply = try #require(try await raw.nextEnvelope(), "no answer to an undecodable frame")
                #expect(reply.callId == 0)
                #expect(reply.kind == .response)
                #expect(reply.status?.code == .invalidArgument)
                #expect(await raw.closedByServer(within: .seconds(2)))
            }
        }

        // (e)
        @Test(arguments: Transport.allCases)
        func payloadThatIsNotTheRequestType(_ transport: Transport) async throws {
            try await withBadConnection(transport) { raw, _ in
                let bad = Envelope(callId: 7, kind: .request, method: IssuanceMethods.getProduct.name, payload: [0xFF, 0x01], timeoutMicros: 5_000_000)
                try await raw.send(frame(bad))
                let reply = try #require(try await raw.nextEnvelope())
                #expect(reply.callId == 7)
                #expect(reply.kind == .response)
                #expect(reply.status?.code == .invalidArgument)
                #expect(reply.payload.isEmpty)

                // The same connection still serves calls.
                let good = Envelope(
                    callId: 8, kind: .request, method: IssuanceMethods.getProduct.name,
                    payload: GetByIdRequest(id: "ok").serializedBytes(), timeoutMicros: 5_000_000)
                try await raw.send(frame(good))
                let answer = try #require(try await raw.nextEnvelope())
                #expect(answer.callId == 8)
                #expect(answer.status?.code == .ok)
                #expect(try Product(serializedBytes: answer.payload).id == "ok")
                #expect(!raw.isClosed)
            }
        }

        @Test func clientSendingAServerFrameKind() async throws {
            try await withBadConnection(.tcp) { raw, _ in
                try await raw.send(frame(Envelope(callId: 3, kind: .streamMessage, method: HealthMethods.check.name)))
                let reply = try #require(try await raw.nextEnvelope())
                #expect(reply.callId == 3)
                #expect(reply.status?.code == .invalidArgument)
                try await raw.send(frame(Envelope(callId: 4, kind: .request, method: HealthMethods.check.name)))
                let answer = try #require(try await raw.nextEnvelope())
                #expect(answer.callId == 4)
                #expect(answer.status?.code == .ok)
            }
        }

        // (f)
        @Test(arguments: Transport.allCases)
        func unknownMethodIsUnimplemented(_ transport: Transport) async throws {
            try await withBadConnection(transport) { _, endpoint in
                let client = RPCClient(endpoint: endpoint)
                let raw = await rpcCode {
                    _ = try await client.callRaw(
                        "licensing.v1.Nothing/Here", payload: [], metadata: [:], deadline: .now + .seconds(5))
                }
                #expect(raw == .unimplemented)
                // A real method this server does not register.
                let typed = await rpcCode { _ = try await client.call(ValidationMethods.validate, ValidateRequest()) }
                #expect(typed == .unimplemented)
                // A streaming call to an unknown method ends with the same status.
                let streamed = await rpcCode {
                    for try await _ in try await client.streamRaw(
                        "licensing.v1.Nothing/Watch", payload: [], metadata: [:], deadline: .now + .seconds(5)) {}
                }
                #expect(streamed == .unimplemented)
                // What the caller sent is echoed only in part: a long method name is not sent
                // back (this server's frames are at most 1 KiB; the default allows 4 MiB).
                let long = "licensing.v1.Nothing/" + String(repeating: "x", count: 900)
                do {
                    _ = try await client.callRaw(long, payload: [], metadata: [:], deadline: .now + .seconds(5))
                    Issue.record("a made-up method answered")
                } catch let error as RPCError {
                    #expect(error.code == .unimplemented)
                    #expect(error.message.utf8.count < 200, "\(error.message.utf8.count) bytes echoed")
                    #expect(error.message.contains("(921 bytes)"), "\(error.message)")
                }
                await client.close()
            }
        }

        // (g)
        @Test(arguments: Transport.allCases)
        func alreadyExpiredDeadline(_ transport: Transport) async throws {
            let invoked = Counter()
            let router = echoRouter(delay: { request in if request.id == "late" { invoked.increment() } })
            try await withBadConnection(transport, router: router) { raw, _ in
                let expired = Envelope(
                    callId: 11, kind: .request, method: IssuanceMethods.getProduct.name,
                    payload: GetByIdRequest(id: "late").serializedBytes(), timeoutMicros: -1)
                try await raw.send(frame(expired))
                let reply = try #require(try await raw.nextEnvelope())
                #expect(reply.callId == 11)
                #expect(reply.status?.code == .deadlineExceeded)
                #expect(invoked.value == 0, "the handler ran for a call whose deadline had passed")
            }
        }

        @Test func handlerFinishingAfterTheDeadlineAnswersDeadlineExceeded() async throws {
            let router = echoRouter(delay: { _ in try await Task.sleep(for: .milliseconds(150)) })
            try await withBadConnection(.unix, router: router) { raw, _ in
                let short = Envelope(
                    callId: 12, kind: .request, method: IssuanceMethods.getProduct.name,
                    payload: GetByIdRequest(id: "slow").serializedBytes(), timeoutMicros: 30_000)
                try await raw.send(frame(short))
                let reply = try #require(try await raw.nextEnvelope())
                #expect(reply.callId == 12)
                #expect(reply.status?.code == .deadlineExceeded)
            }
        }

        // (h)
        @Test(arguments: Transport.allCases)
        func halfAFrameThenStall(_ transport: Transport) async throws {
            try await withBadConnection(transport) { raw, _ in
                let start = ContinuousClock.now
                try await raw.send([0, 0, 0, 100] + [UInt8](repeating: 0x08, count: 40))
                #expect(await raw.closedByServer(within: .seconds(3)), "a stalled partial frame kept the connection open")
                let elapsed = ContinuousClock.now - start
                #expect(elapsed >= .milliseconds(250), "closed after \(elapsed), before the 300 ms timeout")
            }
        }

        @Test func partialLengthPrefixThenStall() async throws {
            try await withBadConnection(.unix) { raw, _ in
                try await raw.send([0, 0])
                #expect(await raw.closedByServer(within: .seconds(3)))
            }
        }

        /// A client trickling a byte at a time must not hold a partial frame open forever:
        /// the frame has to be finished within the timeout, progress or not.
        @Test func tricklingAFrameIsStillCutOff() async throws {
            try await withBadConnection(.unix) { raw, _ in
                let start = ContinuousClock.now
                try await raw.send([0, 0, 0, 100])
                // 99 bytes, one every 100 ms, would finish the frame after about 10 s; the
                // connection must be closed long before (the timeout is 300 ms).
                var sent = 0
                for _ in 0..<99 where !raw.isClosed {
                    try? await raw.send([0x08])
                    sent += 1
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(raw.isClosed, "a trickled frame kept the connection open for \(ContinuousClock.now - start)")
                #expect(sent < 60, "\(sent) bytes trickled before the connection closed")
            }
        }

        @Test func idleConnectionBetweenFramesIsNotCutOff() async throws {
            try await withBadConnection(.unix) { raw, _ in
                try await raw.send(frame(Envelope(callId: 1, kind: .request, method: HealthMethods.check.name)))
                #expect(try await raw.nextEnvelope()?.status?.code == .ok)
                // No partial frame: waiting past the stall timeout is fine.
                try await Task.sleep(for: .milliseconds(500))
                #expect(!raw.isClosed)
                try await raw.send(frame(Envelope(callId: 2, kind: .request, method: HealthMethods.check.name)))
                #expect(try await raw.nextEnvelope()?.callId == 2)
            }
        }
    }
}
