import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

/// Who acts, for whom, when: what every mutation records.
struct MutationContext: Sendable {
    let tenant: String
    let actor: String
    let now: Int64
    let method: String
    let requestDigest: String
}

extension IssuanceService {
    /// Runs a mutating call atomically: the idempotency check, the change, its audit row
    /// and the stored response commit together or not at all (one savepoint of a group
    /// commit), so a retry after a crash either finds the first answer or runs the change
    /// for the first time. The answer is sent only after the commit.
    ///
    /// A retry with the same `idempotency-key` and the same request gets the first response;
    /// the same key with a different request is refused with `ALREADY_EXISTS`.
    func mutate<Response: WireMessage>(
        _ call: ServerCall,
        action: String,
        target: @escaping @Sendable (Response) -> String,
        _ body: @escaping @Sendable (Database, MutationContext) throws -> Response
    ) async throws -> Response {
        let context = MutationContext(
            tenant: tenant(call), actor: call.metadata[RPCMetadata.actor] ?? "local", now: clock.now, method: call.method,
            requestDigest: Hex.encode(SHA256.hash(data: Array(call.method.utf8) + [0] + call.payload)))
        let idempotencyKey = call.metadata[RPCMetadata.idempotencyKey]
        if let key = idempotencyKey, key.isEmpty || key.count > 200 {
            throw RPCError.invalidArgument("idempotency-key must be 1 to 200 characters")
        }
        let ttl = idempotencyTTL
        return try await groupWrite { db in
            if let key = idempotencyKey {
                if let stored = try Row.fetchOne(
                    db, sql: "SELECT method, request_digest, response FROM idempotency WHERE tenant_id = ? AND key = ? AND expires_at > ?",
                    arguments: [context.tenant, key, context.now])
                {
                    guard (stored["method"] as String) == context.method, (stored["request_digest"] as String) == context.requestDigest else {
                        throw RPCError.alreadyExists(
                            "idempotency-key \(key) was used for a different request (\(stored["method"] as String)); use a new key for a new request")
                    }
                    return try Response(serializedBytes: Array(stored["response"] as Data))
                }
            }
            let response = try body(db, context)
            try AuditLog.append(
                actor: context.actor, action: action, target: target(response), requestDigest: context.requestDigest,
                at: context.now, in: db)
            if let key = idempotencyKey {
                try db.execute(
                    sql: """
                        INSERT INTO idempotency (tenant_id, key, method, request_digest, response, created_at, expires_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(tenant_id, key) DO UPDATE SET method = excluded.method, request_digest = excluded.request_digest,
                            response = excluded.response, created_at = excluded.created_at, expires_at = excluded.expires_at
                        """,
                    arguments: [context.tenant, key, context.method, context.requestDigest, Data(response.serializedBytes()), context.now, context.now + ttl])
            }
            return response
        }
    }
}
