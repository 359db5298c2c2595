import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

/// What a mutation did: its answer, and whether anything changed (and so is audited).
struct Mutation<Response: WireMessage>: Sendable {
    let response: Response
    let changed: Bool

    static func changed(_ response: Response) -> Mutation { Mutation(response: response, changed: true) }
    static func unchanged(_ response: Response) -> Mutation { Mutation(response: response, changed: false) }
}

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
        try await mutate(call, action: action, target: target) { db, context in Mutation.changed(try body(db, context)) }
    }

    /// As `mutate`, for a change that may turn out to change nothing (a payment recorded
    /// before, a change with no new values): then no audit row is written.
    func mutate<Response: WireMessage>(
        _ call: ServerCall,
        action: String,
        target: @escaping @Sendable (Response) -> String,
        _ body: @escaping @Sendable (Database, MutationContext) throws -> Mutation<Response>
    ) async throws -> Response {
        let context = MutationContext(
            tenant: tenant(call), actor: call.metadata[RPCMetadata.actor] ?? "local", now: clock.now, method: call.method,
            requestDigest: Hex.encode(SHA256.hash(data: Array(call.method.utf8) + [0] + call.payload)))
        let idempotencyKey = call.metadata[RPCMetadata.idempotencyKey]
        if let key = idempotencyKey, key.isEmpty || key.count > 200 {
            throw RPCError.invalidArgument("idempotency-key must be 1 to 200 characters")
        }
        let ttl = idempotencyTTL
        let masterKey = self.masterKey
        return try await groupWrite { db in
            if let key = idempotencyKey {
                if let stored = try Row.fetchOne(
                    db, sql: "SELECT method, request_digest, response, sealed FROM idempotency WHERE tenant_id = ? AND key = ? AND expires_at > ?",
                    arguments: [context.tenant, key, context.now])
                {
                    guard (stored["method"] as String) == context.method, (stored["request_digest"] as String) == context.requestDigest else {
                        throw RPCError.alreadyExists(
                            "idempotency-key \(key) was used for a different request (\(stored["method"] as String)); use a new key for a new request")
                    }
                    let response = Array(stored["response"] as Data)
                    let opened = (stored["sealed"] as Bool) ? try masterKey.open(response, context: IdempotencyStore.context(context.tenant, key)) : response
                    return try Response(serializedBytes: opened)
                }
            }
            let outcome = try body(db, context)
            let response = outcome.response
            if outcome.changed {
                try AuditLog.append(
                    tenant: context.tenant, actor: context.actor, action: action, target: target(response), requestDigest: context.requestDigest,
                    at: context.now, in: db)
            }
            if let key = idempotencyKey {
                try db.execute(
                    sql: """
                        INSERT INTO idempotency (tenant_id, key, method, request_digest, response, sealed, created_at, expires_at)
                        VALUES (?, ?, ?, ?, ?, 1, ?, ?)
                        ON CONFLICT(tenant_id, key) DO UPDATE SET method = excluded.method, request_digest = excluded.request_digest,
                            response = excluded.response, sealed = 1, created_at = excluded.created_at, expires_at = excluded.expires_at
                        """,
                    arguments: [
                        context.tenant, key, context.method, context.requestDigest,
                        Data(masterKey.seal(response.serializedBytes(), context: IdempotencyStore.context(context.tenant, key))),
                        context.now, context.now + ttl,
                    ])
            }
            return response
        }
    }
}

/// A retry must get the first answer back, and an issued license's answer holds its key:
/// answers are kept sealed under the master key (AES-GCM, bound to tenant and idempotency
/// key), so the database never holds key text.
enum IdempotencyStore {
    static func context(_ tenant: String, _ key: String) -> String { "idempotency\u{0}\(tenant)\u{0}\(key)" }

    /// Seals rows written before answers were sealed; run once at start.
    static func sealLegacyRows(masterKey: MasterKey, in db: Database) throws {
        let rows = try Row.fetchAll(db, sql: "SELECT tenant_id, key, response FROM idempotency WHERE sealed = 0")
        for row in rows {
            let tenant: String = row["tenant_id"]
            let key: String = row["key"]
            let sealed = masterKey.seal(Array(row["response"] as Data), context: context(tenant, key))
            try db.execute(
                sql: "UPDATE idempotency SET response = ?, sealed = 1 WHERE tenant_id = ? AND key = ?", arguments: [Data(sealed), tenant, key])
        }
    }
}
