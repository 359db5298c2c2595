import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingWire

/// The append-only, hash-chained record of every mutation: each row stores the hash of
/// the row before it, so an edited, removed or inserted row breaks the chain from there on.
enum AuditLog {
    static let genesis = String(repeating: "0", count: 64)

    static func append(tenant: String, actor: String, action: String, target: String, requestDigest: String, at time: Int64, in db: Database) throws {
        let last = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
        let seq: Int64 = (last?["seq"] ?? 0) + 1
        let prev: String = last?["hash"] ?? genesis
        let hash = Self.hash(
            seq: seq, tenant: tenant, actor: actor, action: action, target: target, requestDigest: requestDigest, occurredAt: time, prevHash: prev)
        try db.execute(
            sql: "INSERT INTO audit_event (seq, tenant_id, actor, action, target, request_digest, occurred_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [seq, tenant, actor, action, target, requestDigest, time, prev, hash])
    }

    static func hash(
        seq: Int64, tenant: String, actor: String, action: String, target: String, requestDigest: String, occurredAt: Int64, prevHash: String
    ) -> String {
        // Length-prefixed fields, so no two different rows serialise alike. The tenant joined
        // the row later: rows written before it (tenant '') hash as they always did.
        var bytes: [UInt8] = []
        for field in [String(seq), actor, action, target, requestDigest, String(occurredAt), prevHash] + (tenant.isEmpty ? [] : [tenant]) {
            let utf8 = Array(field.utf8)
            withUnsafeBytes(of: UInt32(utf8.count).bigEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: utf8)
        }
        return Hex.encode(SHA256.hash(data: bytes))
    }

    /// Rows after `seq`: of one tenant, or of all when `tenant` is nil (the operator).
    static func events(after seq: UInt64, tenant: String?, limit: Int, in db: Database) throws -> [AuditEvent] {
        try Row.fetchAll(
            db, sql: "SELECT * FROM audit_event WHERE seq > ? AND (? IS NULL OR tenant_id = ?) ORDER BY seq LIMIT ?",
            arguments: [Int64(clamping: seq), tenant, tenant, limit]
        ).map(event)
    }

    /// One target's history, newest first (a license's timeline).
    static func events(about target: String, tenant: String?, limit: Int, in db: Database) throws -> [AuditEvent] {
        try Row.fetchAll(
            db, sql: "SELECT * FROM audit_event WHERE target = ? AND (? IS NULL OR tenant_id = ?) ORDER BY seq DESC LIMIT ?",
            arguments: [target, tenant, tenant, limit]
        ).map(event)
    }

    private static func event(_ row: Row) -> AuditEvent {
        AuditEvent(
            seq: UInt64(row["seq"] as Int64), actor: row["actor"], action: row["action"], target: row["target"],
            requestDigest: row["request_digest"], occurredAt: row["occurred_at"], prevHash: row["prev_hash"], hash: row["hash"])
    }

    /// Walks the whole chain; names the first row that does not match.
    static func verify(in db: Database) throws -> VerifyAuditChainResponse {
        let cursor = try Row.fetchCursor(db, sql: "SELECT * FROM audit_event ORDER BY seq")
        var expectedSeq: Int64 = 1
        var prev = genesis
        var checked: UInt64 = 0
        while let row = try cursor.next() {
            let seq: Int64 = row["seq"]
            let stored: String = row["hash"]
            func broken(_ detail: String) -> VerifyAuditChainResponse {
                VerifyAuditChainResponse(intact: false, rowsChecked: checked, firstBrokenSeq: UInt64(seq), detail: detail)
            }
            guard seq == expectedSeq else { return broken("row \(expectedSeq) is missing") }
            guard (row["prev_hash"] as String) == prev else { return broken("row \(seq) does not link to row \(seq - 1)") }
            let computed = hash(
                seq: seq, tenant: row["tenant_id"], actor: row["actor"], action: row["action"], target: row["target"],
                requestDigest: row["request_digest"], occurredAt: row["occurred_at"], prevHash: prev)
            guard computed == stored else { return broken("row \(seq) was altered after it was written") }
            prev = stored
            expectedSeq += 1
            checked += 1
        }
        return VerifyAuditChainResponse(intact: true, rowsChecked: checked)
    }
}
