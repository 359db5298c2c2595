import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing

extension RPCTests {
    /// Interceptors run before every handler (and may refuse or change the call) and are
    /// told how every call ended.
    @Suite("Interceptors")
    struct InterceptorTests {
        struct Tagging: ServerInterceptor {
            let ended: Recorder<String>

            func admit(_ call: inout ServerCall) throws(RPCError) {
                var metadata = call.metadata
                metadata["x-seen-by"] = "interceptor"
                call = call.with(metadata: metadata)
                if call.metadata["x-let-in"] == nil { throw RPCError(.permissionDenied, "not let in") }
            }

            func finished(_ call: ServerCall, code: StatusCode, after elapsed: Duration) {
                ended.append("\(call.method) \(code) \(call.metadata["x-seen-by"] ?? "-")")
            }
        }

        @Test func admittedCallsSeeTheChangeRefusedOnesNeverReachTheHandler() async throws {
            let ended = Recorder<String>()
            let reached = Counter()
            var router = RPCRouter()
            router.registerImmediate(IssuanceMethods.getProduct) { request, call in
                reached.increment()
                return .answer(Product(id: request.id, name: call.metadata["x-seen-by"] ?? ""))
            }
            router.interceptors = [Tagging(ended: ended)]
            let directory = TemporaryFolder()
            defer { directory.remove() }
            try await withServer(router, on: [Transport.unix.endpoint(in: directory)]) { endpoints in
                let client = RPCClient(endpoint: endpoints[0])
                let admitted = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "p1"), metadata: ["x-let-in": "yes"])
                #expect(admitted.name == "interceptor")
                let refused = await rpcCode { _ = try await client.call(IssuanceMethods.getProduct, GetByIdRequest(id: "p2")) }
                #expect(refused == .permissionDenied)
                #expect(reached.value == 1)
                await client.close()
            }
            #expect(ended.values == [
                "licensing.v1.Issuance/GetProduct OK interceptor", "licensing.v1.Issuance/GetProduct PERMISSION_DENIED interceptor",
            ])
        }
    }
}
