import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Synchronization
import Testing

/// A handler's failure the RPC core maps to a status of its own.
private struct DiskFull: RPCStatusConvertible {
    func rpcError(method: String) -> RPCError? { RPCError(.resourceExhausted, "the disk is full") }
}

private struct Refusing: ServerInterceptor {
    func admit(_ call: inout ServerCall) throws(RPCError) {
        if call.metadata["x-refuse"] != nil { throw RPCError(.permissionDenied, "refused by the interceptor") }
    }
}

/// One router whose answers depend on the product id asked for.
private func parityRouter(streamCancelled: Counter = Counter()) -> RPCRouter {
    var router = RPCRouter()
    router.register(IssuanceMethods.getProduct) { request, call in
        switch request.id {
        case "ok": return Product(id: "ok", name: call.metadata[RPCMetadata.traceID] ?? "")
        case "denied": throw RPCError(.failedPrecondition, "MACHINE_LIMIT: 3 of 3 machines", metadata: ["retry-after": "5"])
        case "crash": throw CancellationError()
        case "opaque": throw DiskFullOpaque()
        case "full": throw DiskFull()
        case "long": throw RPCError(.invalidArgument, String(repeating: "x", count: 5_000))
        case "slow":
            try await Task.sleep(for: .seconds(2))
            return Product(id: "slow")
        default: throw RPCError.notFound("no product \(RPCError.quoted(request.id))")
        }
    }
    router.registerImmediate(IssuanceMethods.getPolicy) { request, _ in
        request.id == "later" ? .later { Policy(id: "later") } : .answer(Policy(id: request.id))
    }
    router.registerStream(IssuanceMethods.watchChanges) { request, _, stream in
        for seq in request.afterSeq..<(request.afterSeq + 3) { try await stream.send(ChangeEvent(seq: seq + 1)) }
        if request.limit == 7 { throw RPCError(.dataLoss, "the feed was cut") }
        if request.limit == 9 {
            do {
                try await Task.sleep(for: .seconds(30))
            } catch {
                streamCancelled.increment()
                throw error
            }
        }
    }
    router.interceptors = [Refusing()]
    return router
}

private struct DiskFullOpaque: Error {}

/// What a caller sees of a call: its answer or its status, message and metadata.
private func outcome(_ body: () async throws -> String) async -> String {
    do {
        return "OK \(try await body())"
    } catch let error as RPCError {
        return "\(error.code) \(error.message) \(error.metadata.entries.map { "\($0.key)=\($0.value)" })"
    } catch {
        return "not an RPCError: \(error)"
    }
}

extension RPCTests {
    @Suite("In-process transport")
    struct InProcessTransportTests {
        /// Every kind of outcome reaches a caller in-process exactly as it does over a socket.
        @Test func answersAsOverASocket() async throws {
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(parityRouter(), on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let socket = RPCClient(endpoint: endpoints[0])
                let local = RPCClient(endpoint: .inProcess(InProcessServer("issuance", router: parityRouter())))
                func both(_ call: (RPCClient) async throws -> String) async -> (String, String) {
                    (await outcome { try await call(socket) }, await outcome { try await call(local) })
                }
                var cases: [(String, String)] = []
                for id in ["ok", "denied", "crash", "opaque", "full", "long", "missing\u{1}"] {
                    cases.append(await both { try await $0.call(IssuanceMethods.getProduct, GetByIdRequest(id: id), metadata: [RPCMetadata.traceID: "t-7"]).name })
                }
                cases.append(await both { try await $0.call(IssuanceMethods.getProduct, GetByIdRequest(id: "slow"), timeout: .milliseconds(200)).name })
                cases.append(await both { try await $0.call(IssuanceMethods.getProduct, GetByIdRequest(id: "ok"), metadata: ["x-refuse": "1"]).name })
                // A request whose id holds a NUL byte (field 1, three bytes "a\0b").
                cases.append(await both { String(try await $0.callRaw(IssuanceMethods.getProduct.name, payload: [0x0a, 0x03, 0x61, 0x00, 0x62], metadata: [:], deadline: .now + .seconds(5)).count) })
                cases.append(await both { try await $0.call(IssuanceMethods.getPolicy, GetByIdRequest(id: "later")).id })
                cases.append(await both { try await $0.call(IssuanceMethods.getCustomer, GetByIdRequest(id: "c")).id })
                cases.append(await both { String(try await $0.callRaw(IssuanceMethods.getPolicy.name, payload: [0xff, 0xff], metadata: [:], deadline: .now + .seconds(5)).count) })
                for limit: UInt32 in [0, 7] {
                    cases.append(await both { client in
                        var seqs: [UInt64] = []
                        for try await event in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 10, limit: limit)) { seqs.append(event.seq) }
                        return "\(seqs)"
                    })
                }
                for (index, (overSocket, inProcess)) in cases.enumerated() where index != 7 {
                    #expect(inProcess == overSocket)
                }
                // A deadline's message names the time left, which differs by microseconds.
                #expect(cases[7].0.hasPrefix("DEADLINE_EXCEEDED "))
                #expect(cases[0].1 == "OK t-7")
                #expect(cases[1].1.hasPrefix("FAILED_PRECONDITION MACHINE_LIMIT: 3 of 3 machines [\"retry-after=5\"]"))
                #expect(cases[3].1.hasPrefix("INTERNAL "))
                #expect(cases[4].1.hasPrefix("RESOURCE_EXHAUSTED the disk is full"))
                #expect(cases[7].1.hasPrefix("DEADLINE_EXCEEDED "))
                #expect(cases[8].1.hasPrefix("PERMISSION_DENIED refused by the interceptor"))
                #expect(cases[9].1.hasPrefix("INVALID_ARGUMENT "))
                #expect(cases[11].1.hasPrefix("UNIMPLEMENTED "))
                #expect(cases[14].1.hasPrefix("DATA_LOSS the feed was cut"))
                await socket.close()
            }
        }

        /// A server that is not serving yet, or has stopped, answers UNAVAILABLE, as an
        /// address nobody listens on does; services that call each other can be made first.
        @Test func unavailableUntilServedAndAfterStopping() async throws {
            let server = InProcessServer("validation")
            let client = RPCClient(endpoint: .inProcess(server))
            let before = await rpcCode { _ = try await client.call(IssuanceMethods.getPolicy, GetByIdRequest(id: "p")) }
            #expect(before == .unavailable)
            server.serve(parityRouter())
            #expect(try await client.call(IssuanceMethods.getPolicy, GetByIdRequest(id: "p")).id == "p")
            server.stop()
            let after = await rpcCode { _ = try await client.call(IssuanceMethods.getPolicy, GetByIdRequest(id: "p")) }
            #expect(after == .unavailable)
        }

        /// A caller that stops reading a feed early ends the handler's work.
        @Test func endingAStreamEarlyCancelsItsHandler() async throws {
            let cancelled = Counter()
            let client = RPCClient(endpoint: .inProcess(InProcessServer("issuance", router: parityRouter(streamCancelled: cancelled))))
            for try await event in try await client.stream(IssuanceMethods.watchChanges, ChangesRequest(afterSeq: 0, limit: 9)) {
                if event.seq == 3 { break }
            }
            #expect(await eventually { cancelled.value == 1 })
        }

        /// A caller's cancellation ends its wait at once; the unary handler itself runs to
        /// its end, as over a socket (a mutation half done is worse than an unwanted answer).
        @Test func aCancelledCallerStopsWaiting() async throws {
            let client = RPCClient(endpoint: .inProcess(InProcessServer("issuance", router: parityRouter())))
            let waiting = Task { await rpcCode { _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "slow")) } }
            try await Task.sleep(for: .milliseconds(50))
            waiting.cancel()
            #expect(await waiting.value == .cancelled)
        }
    }
}
