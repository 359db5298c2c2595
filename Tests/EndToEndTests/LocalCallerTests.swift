import Foundation
import LicensingRPC
import LicensingWire
import Testing

/// Local callers share one address (the Unix socket); the gateway tells them apart by their
/// peer credentials, so one misbehaving client cannot lock the others out.
@Suite(.serialized) struct LocalCallerTests {
    @Test func aMisbehavingLocalClientDoesNotLockOutLicensectl() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let bad = RPCClient(endpoint: stack.endpoint("gateway"), configuration: RPCClientConfiguration(connections: 1, metadata: [RPCMetadata.apiKey: "lmk_wrong"]))
        defer { Task { await bad.close() } }
        // 40 bad calls at once: past the burst of 10 however slow the machine is.
        let codes = await withTaskGroup(of: StatusCode?.self) { group in
            for _ in 0..<40 {
                group.addTask {
                    do { _ = try await bad.call(GatewayMethods.listApiKeys, ListApiKeysRequest()) } catch let error as RPCError { return error.code } catch {}
                    return nil
                }
            }
            var codes: [StatusCode?] = []
            for await code in group { codes.append(code) }
            return codes
        }
        #expect(codes.contains(.unauthenticated))
        #expect(codes.contains(.resourceExhausted), "the misbehaving process is limited: \(codes)")

        let (status, output) = try await Stack.run("licensectl", ["apikey", "list", "--gateway", "unix:\(stack.folder)/run/gateway.sock", "--api-key", stack.adminKey])
        #expect(status == 0, "licensectl was locked out by another process: \(output)")
        #expect(output.contains("bootstrap admin"), "\(output)")
    }
}
