import Foundation
import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingWire

// The change feed and the audit log, as callers read them.

extension IssuanceService {
    public func changes(_ request: ChangesRequest, _ call: ServerCall) async throws -> ChangesResponse {
        try requireService(call)
        let limit = request.limit == 0 ? 500 : min(Int(request.limit), 5000)
        return try await database.read { db in
            let epoch = try Row.fetchOne(db, sql: "SELECT epoch, since_seq FROM feed_epoch")
            return ChangesResponse(
                events: try ChangeFeed.read(after: request.afterSeq, limit: limit, in: db),
                lastSeq: try ChangeFeed.lastSeq(in: db),
                epoch: epoch?["epoch"] ?? "", epochSinceSeq: UInt64(epoch?["since_seq"] as Int64? ?? 0))
        }
    }

    /// Sends every event after `after_seq`, then new ones as they are written, until the
    /// caller cancels or the deadline passes.
    public func watchChanges(_ request: ChangesRequest, _ call: ServerCall, _ stream: TypedResponseStream<ChangeEvent>) async throws {
        try requireService(call)
        var after = request.afterSeq
        let batch = request.limit == 0 ? 500 : min(Int(request.limit), 5000)
        while !Task.isCancelled, ContinuousClock.now < call.deadline {
            let from = after
            let events = try await database.read { db in try ChangeFeed.read(after: from, limit: batch, in: db) }
            for event in events {
                try await stream.send(event)
                after = event.seq
            }
            if events.count < batch {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    public func listAuditEvents(_ request: ListAuditEventsRequest, _ call: ServerCall) async throws -> ListAuditEventsResponse {
        let limit = request.limit == 0 ? 100 : min(Int(request.limit), 1000)
        let scope = isOperator(call) ? nil : tenant(call)
        try Check.length(request.target, "target")
        if !request.target.isEmpty {
            return try await database.read { db in
                ListAuditEventsResponse(events: try AuditLog.events(about: request.target, tenant: scope, limit: limit, in: db))
            }
        }
        return try await database.read { db in
            ListAuditEventsResponse(events: try AuditLog.events(after: request.afterSeq, tenant: scope, limit: limit, in: db))
        }
    }

    public func verifyAuditChain(_ request: VerifyAuditChainRequest, _ call: ServerCall) async throws -> VerifyAuditChainResponse {
        try requireOperator(call)
        return try await database.read { db in try AuditLog.verify(in: db) }
    }
}
