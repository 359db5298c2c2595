import LicensingRPC
import LicensingRuntime
import LicensingWire

// Master-key rotation: validation keeps the signing keys it received sealed.
extension ValidationService {
    public func rewrapSecrets(_ request: RewrapSecretsRequest, _ call: ServerCall) async throws -> RewrapSecretsResponse {
        if let tenant = call.metadata[RPCMetadata.tenant], tenant != "default" {
            throw RPCError(.permissionDenied, "\(call.method) acts on every tenant: only the operator may call it")
        }
        let rotation = MasterKeyRotation(
            service: "validation", masterKey: masterKey, database: database,
            columns: [SealedColumn(table: "replica_signing_key", column: "sealed_private_key", reads: ["kid"]) { $0["kid"] }])
        let answer = try await rotation.answer(request)
        // The opened key is the same key: nothing to reload, but a fresh open proves the new wrap.
        if answer.rewrapped > 0 { signingKeys.invalidate() }
        return answer
    }
}
