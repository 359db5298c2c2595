import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

extension IssuanceService {
    func issueLicense(_ request: IssueLicenseRequest, _ call: ServerCall) async throws -> IssueLicenseResponse {
        try Check.nonEmpty(request.policyId, "policy_id")
        try Check.nonEmpty(request.customerId, "customer_id")
        let overrides = request.overrides ?? LicenseOverrides()
        try Check.features(overrides.features)
        try Check.nonNegative(overrides.expiresAt, "overrides.expires_at")
        if overrides.overagePermille != 0, !(1000...10000).contains(overrides.overagePermille) {
            throw RPCError.invalidArgument("overrides.overage_permille must be between 1000 and 10000")
        }
        let tenant = tenant(call)
        let now = clock.now
        let key = LicenseKey.generate()
        let keyHash = key.hash(secret: keyHashSecret)
        let license = try await write { db -> License in
            guard let policyRow = try Row.fetchOne(db, sql: "SELECT * FROM policy WHERE id = ? AND tenant_id = ?", arguments: [request.policyId, tenant]) else {
                throw RPCError.notFound("no policy \(request.policyId)")
            }
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM customer WHERE id = ? AND tenant_id = ?", arguments: [request.customerId, tenant]) == true else {
                throw RPCError.notFound("no customer \(request.customerId)")
            }
            let policy = Policy(row: policyRow)
            if overrides.expiresAt != 0, overrides.expiresAt <= now {
                throw RPCError.invalidArgument("overrides.expires_at \(overrides.expiresAt) is not in the future")
            }
            let license = License(
                id: EntityID.make("lic"), productId: policy.productId, policyId: policy.id,
                customerId: request.customerId, departmentId: request.departmentId,
                licenseType: policy.licenseType, state: .active, keyPrefix: key.prefix,
                issuedAt: now, startsAt: now,
                expiresAt: overrides.expiresAt != 0 ? overrides.expiresAt : (policy.durationSeconds == 0 ? 0 : now + policy.durationSeconds),
                graceSeconds: policy.graceSeconds,
                maxMachines: overrides.maxMachines != 0 ? overrides.maxMachines : policy.maxMachines,
                maxUsers: overrides.maxUsers != 0 ? overrides.maxUsers : policy.maxUsers,
                maxSeats: overrides.maxSeats != 0 ? overrides.maxSeats : policy.maxSeats,
                features: overrides.features.isEmpty ? policy.features : overrides.features,
                allowedRegions: policy.allowedRegions, deniedRegions: policy.deniedRegions,
                overagePermille: overrides.overagePermille != 0 ? overrides.overagePermille : policy.overagePermille,
                checkInIntervalSeconds: policy.checkInIntervalSeconds, tenantId: tenant, updatedAt: now)
            try db.execute(
                sql: """
                    INSERT INTO license (id, tenant_id, product_id, policy_id, customer_id, department_id, license_type, state,
                        key_hash, key_prefix, issued_at, starts_at, expires_at, grace_seconds, max_machines, max_users, max_seats,
                        features, allowed_regions, denied_regions, overage_permille, check_in_interval_seconds, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    license.id, license.tenantId, license.productId, license.policyId, license.customerId, license.departmentId,
                    license.licenseType.rawValue, license.state.rawValue, keyHash, license.keyPrefix, license.issuedAt,
                    license.startsAt, license.expiresAt, license.graceSeconds, license.maxMachines, license.maxUsers,
                    license.maxSeats, NameList.encode(license.features), NameList.encode(license.allowedRegions),
                    NameList.encode(license.deniedRegions), license.overagePermille, license.checkInIntervalSeconds, license.updatedAt,
                ])
            try ChangeFeed.append(ChangeEvent(kind: .license, action: "license.issued", license: license, keyHash: keyHash), at: now, in: db)
            return license
        }
        call.logger.info("license issued", metadata: ["license": "\(license.id)", "prefix": "\(license.keyPrefix)"])
        return IssueLicenseResponse(license: license, licenseKey: key.description)
    }

    func getLicense(_ request: GetLicenseRequest, _ call: ServerCall) async throws -> License {
        let tenant = tenant(call)
        if !request.licenseKey.isEmpty {
            let key: LicenseKey
            do {
                key = try LicenseKey(parsing: request.licenseKey)
            } catch {
                throw RPCError.invalidArgument("license_key: \(error)")
            }
            let hash = key.hash(secret: keyHashSecret)
            let found = try await database.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM license WHERE key_hash = ? AND tenant_id = ?", arguments: [hash, tenant]).map(License.init(row:))
            }
            guard let found else { throw RPCError.notFound("no license has this key") }
            return found
        }
        try Check.nonEmpty(request.id, "id (or license_key)")
        let found = try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM license WHERE id = ? AND tenant_id = ?", arguments: [request.id, tenant]).map(License.init(row:))
        }
        guard let found else { throw RPCError.notFound("no license \(request.id)") }
        return found
    }

    func listLicenses(_ request: ListLicensesRequest, _ call: ServerCall) async throws -> ListLicensesResponse {
        let page = Page(request.page)
        var sql = "SELECT * FROM license WHERE tenant_id = ? AND id > ?"
        var arguments: StatementArguments = [tenant(call), page.after]
        if !request.customerId.isEmpty {
            sql += " AND customer_id = ?"
            _ = arguments.append(contentsOf: [request.customerId])
        }
        if !request.productId.isEmpty {
            sql += " AND product_id = ?"
            _ = arguments.append(contentsOf: [request.productId])
        }
        if request.state != .unspecified {
            sql += " AND state = ?"
            _ = arguments.append(contentsOf: [request.state.rawValue])
        }
        if request.expiringBefore != 0 {
            sql += " AND expires_at > 0 AND expires_at < ?"
            _ = arguments.append(contentsOf: [request.expiringBefore])
        }
        sql += " ORDER BY id LIMIT ?"
        _ = arguments.append(contentsOf: [page.size])
        let query = sql
        let bound = arguments
        let licenses = try await database.read { db in
            try Row.fetchAll(db, sql: query, arguments: bound).map(License.init(row:))
        }
        return ListLicensesResponse(licenses: licenses, nextPageToken: page.nextToken(licenses.map(\.id)))
    }

    /// Suspend, reinstate and revoke, each checked against the state machine:
    /// revoked is terminal; only an active or in-grace license can be suspended; only a
    /// suspended one can be reinstated.
    func transition(_ request: LicenseTransitionRequest, _ call: ServerCall, to target: LicenseState) async throws -> License {
        try Check.nonEmpty(request.id, "id")
        try Check.length(request.reason, "reason", max: 500)
        let tenant = tenant(call)
        let now = clock.now
        return try await write { db -> License in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM license WHERE id = ? AND tenant_id = ?", arguments: [request.id, tenant]) else {
                throw RPCError.notFound("no license \(request.id)")
            }
            var license = License(row: row)
            let keyHash: String = row["key_hash"]
            let facts = LicenseFacts(licenseID: license.id, state: license.state, startsAt: license.startsAt, expiresAt: license.expiresAt, graceSeconds: license.graceSeconds)
            let current = facts.effectiveState(at: now)
            let action: String
            switch (current, target) {
            case (.revoked, _):
                throw RPCError.failedPrecondition("license \(license.id) is revoked; revocation is final")
            case (.active, .suspended), (.inGrace, .suspended):
                action = "license.suspended"
            case (_, .suspended):
                throw RPCError.failedPrecondition("license \(license.id) is \(current) and cannot be suspended")
            case (.suspended, .active):
                action = "license.reinstated"
            case (_, .active):
                throw RPCError.failedPrecondition("license \(license.id) is \(current), not suspended; only a suspended license can be reinstated")
            case (_, .revoked):
                action = "license.revoked"
            default:
                throw RPCError.failedPrecondition("license \(license.id) cannot go from \(current) to \(target)")
            }
            license.state = target
            license.stateReason = request.reason
            license.updatedAt = now
            try db.execute(
                sql: "UPDATE license SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
                arguments: [target.rawValue, request.reason, now, license.id])
            try ChangeFeed.append(ChangeEvent(kind: .license, action: action, license: license, keyHash: keyHash), at: now, in: db)
            return license
        }
    }

    // MARK: Change feed

    func changes(_ request: ChangesRequest, _ call: ServerCall) async throws -> ChangesResponse {
        let limit = request.limit == 0 ? 500 : min(Int(request.limit), 5000)
        return try await database.read { db in
            ChangesResponse(
                events: try ChangeFeed.read(after: request.afterSeq, limit: limit, in: db),
                lastSeq: try ChangeFeed.lastSeq(in: db))
        }
    }

    /// Sends every event after `after_seq`, then new ones as they are written, until the
    /// caller cancels or the deadline passes.
    func watchChanges(_ request: ChangesRequest, _ call: ServerCall, _ stream: TypedResponseStream<ChangeEvent>) async throws {
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
}
