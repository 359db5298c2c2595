import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// The license lifecycle. States: active → in grace → expired (by time); suspended (until
// reinstated); revoked (final). Every transition is checked here and refused with
// FAILED_PRECONDITION and the reason when the state machine does not allow it.

extension IssuanceService {
    public func issueLicense(_ request: IssueLicenseRequest, _ call: ServerCall) async throws -> IssueLicenseResponse {
        try Check.nonEmpty(request.policyId, "policy_id")
        try Check.nonEmpty(request.customerId, "customer_id")
        let overrides = request.overrides ?? LicenseOverrides()
        try Check.features(overrides.features)
        try Check.nonNegative(overrides.expiresAt, "overrides.expires_at")
        try Check.nonNegative(request.amountMinor, "amount_minor")
        try Check.length(request.billingRef, "billing_ref")
        if overrides.overagePermille != 0, !(1000...10000).contains(overrides.overagePermille) {
            throw RPCError.invalidArgument("overrides.overage_permille must be between 1000 and 10000")
        }
        let key = LicenseKey.generate()
        let (keyHash, keyPrefix) = try importedKey(request) ?? (key.hash(secret: keyHashSecret), key.prefix)
        let response = try await mutate(call, action: "license.issue", target: { $0.license?.id ?? "" }) { db, context in
            guard let policy = try PolicyRecord.owned(by: context.tenant).filter(id: request.policyId).fetchOne(db)?.message else {
                throw RPCError.notFound("no policy \(request.policyId)")
            }
            guard let customer = try self.vault.findCustomer(request.customerId, tenant: context.tenant, in: db) else {
                throw RPCError.notFound("no customer \(request.customerId)")
            }
            if !request.departmentId.isEmpty {
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM department WHERE id = ? AND customer_id = ?", arguments: [request.departmentId, customer.id]) == true else {
                    throw RPCError.notFound("customer \(customer.id) has no department \(request.departmentId)")
                }
            }
            if !request.importedKey.isEmpty, let holder = try Row.fetchOne(db, sql: "SELECT id, tenant_id FROM license WHERE key_hash = ?", arguments: [keyHash]) {
                throw RPCError(.alreadyExists, holder["tenant_id"] == context.tenant ? "license \(holder["id"] as String) already has this key" : "this key is already in use")
            }
            if overrides.expiresAt != 0, overrides.expiresAt <= context.now {
                throw RPCError.invalidArgument("overrides.expires_at \(ISODate.format(overrides.expiresAt)) is not in the future")
            }
            if policy.licenseType == .subscription, request.billingRef.isEmpty {
                throw RPCError.invalidArgument("a subscription license needs billing_ref, the billing system's reference")
            }
            let license = License(
                id: EntityID.make("lic"), productId: policy.productId, policyId: policy.id,
                customerId: customer.id, departmentId: request.departmentId,
                licenseType: policy.licenseType, state: .active, keyPrefix: keyPrefix,
                issuedAt: context.now, startsAt: context.now,
                expiresAt: overrides.expiresAt != 0 ? overrides.expiresAt : (policy.durationSeconds == 0 ? 0 : context.now.saturatingAdd(policy.durationSeconds)),
                graceSeconds: policy.graceSeconds,
                maxMachines: overrides.maxMachines != 0 ? overrides.maxMachines : policy.maxMachines,
                maxUsers: overrides.maxUsers != 0 ? overrides.maxUsers : policy.maxUsers,
                maxSeats: overrides.maxSeats != 0 ? overrides.maxSeats : policy.maxSeats,
                features: overrides.features.isEmpty ? policy.features : overrides.features,
                allowedRegions: policy.allowedRegions, deniedRegions: policy.deniedRegions,
                overagePermille: overrides.overagePermille != 0 ? overrides.overagePermille : policy.overagePermille,
                checkInIntervalSeconds: policy.checkInIntervalSeconds, tenantId: context.tenant, updatedAt: context.now)
            try LicenseRecord(license, keyHash: keyHash).insert(db)
            var answered = license
            answered.feedSeq = try ChangeFeed.append(ChangeEvent(action: "license.issued", .license(license), keyHash: keyHash), at: context.now, in: db)
            if !request.billingRef.isEmpty {
                guard license.expiresAt != 0 else {
                    throw RPCError.invalidArgument("billing_ref needs a license that expires: the policy is perpetual")
                }
                let subscription = Subscription(
                    id: EntityID.make("sub"), licenseId: license.id, billingRef: request.billingRef,
                    periodStart: license.startsAt, periodEnd: license.expiresAt, status: .active, autoRenew: true,
                    amountMinor: request.amountMinor, currency: request.currency)
                try Subscriptions.insert(subscription, tenant: context.tenant, in: db)
                answered.feedSeq = try ChangeFeed.append(ChangeEvent(action: "subscription.started", .subscription(subscription)), at: context.now, in: db)
            }
            if request.sealKeyForReveal {
                let (token, expiresAt) = try KeyReveal.seal(key, license: license.id, context: context, in: db)
                return IssueLicenseResponse(license: answered, revealToken: token, revealExpiresAt: expiresAt)
            }
            return IssueLicenseResponse(license: answered, licenseKey: request.importedKey.isEmpty ? key.description : "")
        }
        call.logger.info("license issued", metadata: ["license": "\(response.license?.id ?? "")", "prefix": "\(keyPrefix)"])
        return response
    }

    /// An imported key's hash and prefix (nil when the license gets a new key).
    private func importedKey(_ request: IssueLicenseRequest) throws -> (String, String)? {
        guard !request.importedKey.isEmpty else { return nil }
        guard !request.sealKeyForReveal else { throw RPCError.invalidArgument("an imported key is the holder's already: it cannot be sealed for a reveal") }
        do {
            let imported = try ImportedKey(parsing: request.importedKey)
            return (imported.hash(secret: keyHashSecret), imported.prefix)
        } catch {
            throw RPCError.invalidArgument("imported_key: \(error)")
        }
    }

    public func getLicense(_ request: GetLicenseRequest, _ call: ServerCall) async throws -> License {
        let tenant = tenant(call)
        if !request.licenseKey.isEmpty {
            let hash: String
            do {
                hash = try KeyReference(parsing: request.licenseKey, secret: keyHashSecret).hash
            } catch {
                throw RPCError.invalidArgument("license_key: \(error)")
            }
            let found = try await database.read { db in
                try StoredLicense.fetch(db, LicenseRecord.filter(Column("key_hash") == hash), tenant: tenant, vault: self.vault)?.license
            }
            guard let found else { throw RPCError.notFound("no license has this key") }
            return found
        }
        try Check.nonEmpty(request.id, "id (or license_key)")
        let found = try await database.read { db in try StoredLicense.fetch(db, id: request.id, tenant: tenant, vault: self.vault)?.license }
        guard let found else { throw RPCError.notFound("no license \(request.id)") }
        return found
    }

    public func listLicenses(_ request: ListLicensesRequest, _ call: ServerCall) async throws -> ListLicensesResponse {
        let page = Page(request.page)
        var selected = LicenseRecord.owned(by: tenant(call))
        if !request.customerId.isEmpty { selected = selected.filter(Column("customer_id") == request.customerId) }
        if !request.productId.isEmpty { selected = selected.filter(Column("product_id") == request.productId) }
        if request.state != .unspecified { selected = selected.filter(Column("state") == request.state.rawValue) }
        if request.expiringBefore != 0 { selected = selected.filter(Column("expires_at") > 0 && Column("expires_at") < request.expiringBefore) }
        let query = selected.page(page)
        let licenses = try await database.read { db in try query.fetchAll(db).map(\.message) }
        return ListLicensesResponse(licenses: licenses, nextPageToken: page.nextToken(licenses.map(\.id)))
    }

    /// Suspend, reinstate and revoke: revoked is final; only an active or in-grace license
    /// can be suspended; only a suspended one can be reinstated.
    func transition(_ request: LicenseTransitionRequest, _ call: ServerCall, to target: LicenseState) async throws -> License {
        try Check.nonEmpty(request.id, "id")
        try Check.length(request.reason, "reason", max: 500)
        let verb = target == .suspended ? "suspend" : target == .revoked ? "revoke" : "reinstate"
        return try await mutate(call, action: "license.\(verb)", target: \.id) { db, context in
            var record = try StoredLicense.require(db, id: request.id, tenant: context.tenant, vault: self.vault)
            let current = record.effectiveState(at: context.now)
            let action: String
            switch (current, target) {
            case (.revoked, _):
                throw RPCError.failedPrecondition("license \(request.id) is revoked; revocation is final")
            case (.active, .suspended), (.inGrace, .suspended):
                action = "license.suspended"
            case (_, .suspended):
                throw RPCError.failedPrecondition("license \(request.id) is \(current) and cannot be suspended")
            case (.suspended, .active):
                action = "license.reinstated"
            case (_, .active):
                throw RPCError.failedPrecondition("license \(request.id) is \(current), not suspended; only a suspended license can be reinstated")
            case (_, .revoked):
                action = "license.revoked"
            default:
                throw RPCError.failedPrecondition("license \(request.id) cannot go from \(current) to \(target)")
            }
            // A reinstated license resumes the state its dates give it.
            record.license.state = target == .active ? record.stateByTime(at: context.now) : target
            record.license.stateReason = request.reason
            return try record.save(action: action, at: context.now, in: db)
        }
    }

    /// Extends a license by its policy's period (from its expiry, or from now if that has
    /// passed) or to a given date. An expired or in-grace license becomes active again.
    public func renewLicense(_ request: RenewLicenseRequest, _ call: ServerCall) async throws -> License {
        try Check.nonEmpty(request.id, "id")
        try Check.nonNegative(request.extendTo, "extend_to")
        return try await mutate(call, action: "license.renew", target: \.id) { db, context in
            var record = try StoredLicense.require(db, id: request.id, tenant: context.tenant, vault: self.vault)
            if record.license.state == .revoked {
                throw RPCError.failedPrecondition("license \(request.id) is revoked and cannot be renewed")
            }
            guard record.license.expiresAt != 0 else {
                throw RPCError.failedPrecondition("license \(request.id) is perpetual; there is nothing to renew")
            }
            let newExpiry: Int64
            if request.extendTo != 0 {
                guard request.extendTo > max(record.license.expiresAt, context.now) else {
                    throw RPCError.invalidArgument(
                        "extend_to \(ISODate.format(request.extendTo)) is not after the current expiry (\(ISODate.format(record.license.expiresAt))) and now")
                }
                newExpiry = request.extendTo
            } else {
                let period = try Int64.fetchOne(db, sql: "SELECT duration_seconds FROM policy WHERE id = ?", arguments: [record.license.policyId]) ?? 0
                guard period > 0 else {
                    throw RPCError.failedPrecondition("policy \(record.license.policyId) has no period; give extend_to")
                }
                newExpiry = min(max(record.license.expiresAt, context.now).saturatingAdd(period), RequestBounds.maximumTimestamp)
            }
            record.license.expiresAt = newExpiry
            if record.license.state != .suspended { record.license.state = .active }
            return try record.save(action: "license.renewed", at: context.now, in: db)
        }
    }

    public func changeEntitlements(_ request: ChangeEntitlementsRequest, _ call: ServerCall) async throws -> License {
        try Check.nonEmpty(request.id, "id")
        try Check.features(request.features)
        if (request.unlimitedMachines && request.maxMachines != 0) || (request.unlimitedUsers && request.maxUsers != 0)
            || (request.unlimitedSeats && request.maxSeats != 0)
        {
            throw RPCError.invalidArgument("a limit is either a number or unlimited, not both")
        }
        return try await mutate(call, action: "license.change_entitlements", target: \.id) { db, context -> Mutation<License> in
            var record = try StoredLicense.require(db, id: request.id, tenant: context.tenant, vault: self.vault)
            if record.license.state == .revoked {
                throw RPCError.failedPrecondition("license \(request.id) is revoked; its entitlements are final")
            }
            let before = record.license
            if request.replaceFeatures {
                record.license.features = request.features
            } else {
                for feature in request.features where !record.license.features.contains(feature) {
                    record.license.features.append(feature)
                }
            }
            if request.maxMachines != 0 { record.license.maxMachines = request.maxMachines }
            if request.maxSeats != 0 { record.license.maxSeats = request.maxSeats }
            if request.unlimitedMachines { record.license.maxMachines = 0 }
            if request.unlimitedSeats { record.license.maxSeats = 0 }
            if request.unlimitedUsers { record.license.maxUsers = 0 }
            if request.maxUsers != 0 {
                guard request.maxUsers >= UInt32(record.license.namedUsers.count) else {
                    throw RPCError.failedPrecondition(
                        "license \(request.id) has \(record.license.namedUsers.count) named users; unassign some before lowering max_users to \(request.maxUsers)")
                }
                record.license.maxUsers = request.maxUsers
            }
            // A change that changes nothing is answered, not recorded.
            guard record.license != before else { return .unchanged(record.license) }
            return .changed(try record.save(action: "license.entitlements_changed", at: context.now, in: db))
        }
    }

    public func transferLicense(_ request: TransferLicenseRequest, _ call: ServerCall) async throws -> License {
        try Check.nonEmpty(request.id, "id")
        try Check.nonEmpty(request.toCustomerId, "to_customer_id")
        return try await mutate(call, action: "license.transfer", target: \.id) { db, context in
            var record = try StoredLicense.require(db, id: request.id, tenant: context.tenant, vault: self.vault)
            if record.license.state == .revoked {
                throw RPCError.failedPrecondition("license \(request.id) is revoked and cannot be transferred")
            }
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM customer WHERE id = ? AND tenant_id = ?", arguments: [request.toCustomerId, context.tenant]) == true else {
                throw RPCError.notFound("no customer \(request.toCustomerId)")
            }
            guard request.toCustomerId != record.license.customerId || request.toDepartmentId != record.license.departmentId else {
                throw RPCError.failedPrecondition("license \(request.id) already belongs there")
            }
            if request.toDepartmentId.isEmpty, !record.license.departmentId.isEmpty {
                throw RPCError.failedPrecondition(
                    "license \(request.id) belongs to department \(record.license.departmentId); name a department of customer \(request.toCustomerId) to move it to (--department)")
            }
            if !request.toDepartmentId.isEmpty {
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM department WHERE id = ? AND customer_id = ?", arguments: [request.toDepartmentId, request.toCustomerId]) == true else {
                    throw RPCError.notFound("customer \(request.toCustomerId) has no department \(request.toDepartmentId)")
                }
            }
            // Named users belong to the old owner.
            try db.execute(sql: "DELETE FROM license_user WHERE license_id = ?", arguments: [record.license.id])
            record.license.namedUsers = []
            record.license.customerId = request.toCustomerId
            record.license.departmentId = request.toDepartmentId
            return try record.save(action: "license.transferred", at: context.now, in: db)
        }
    }

    /// Named users of a per-user license, up to its max_users (0 = unlimited).
    func assignUser(_ request: AssignUserRequest, _ call: ServerCall, assign: Bool) async throws -> License {
        try Check.nonEmpty(request.id, "id")
        try Check.nonEmpty(request.user, "user")
        try Check.length(request.user, "user")
        return try await mutate(call, action: assign ? "license.assign_user" : "license.unassign_user", target: \.id) { db, context in
            var record = try StoredLicense.require(db, id: request.id, tenant: context.tenant, vault: self.vault)
            guard record.license.licenseType == .perUser || record.license.licenseType == .enterprise else {
                throw RPCError.failedPrecondition("license \(request.id) is \(record.license.licenseType); only per-user and enterprise licenses have named users")
            }
            if assign {
                if record.license.state == .revoked {
                    throw RPCError.failedPrecondition("license \(request.id) is revoked")
                }
                guard !record.license.namedUsers.contains(request.user) else {
                    throw RPCError.alreadyExists("\(request.user) is already assigned to license \(request.id)")
                }
                let limit = record.license.maxUsers
                guard limit == 0 || record.license.namedUsers.count < Int(limit) else {
                    throw RPCError.failedPrecondition("USER_LIMIT: license \(request.id) already has its \(limit) named users")
                }
                _ = try self.vault.assign(request.user, license: record.license.id, customer: record.license.customerId, at: context.now, in: db)
                record.license.namedUsers.append(request.user)
            } else {
                guard record.license.namedUsers.contains(request.user) else {
                    throw RPCError.notFound("\(request.user) is not assigned to license \(request.id)")
                }
                _ = try self.vault.unassign(request.user, license: record.license.id, customer: record.license.customerId, in: db)
                record.license.namedUsers.removeAll { $0 == request.user }
            }
            return try record.save(action: assign ? "license.user_assigned" : "license.user_unassigned", at: context.now, in: db)
        }
    }
}
