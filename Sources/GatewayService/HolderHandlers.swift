import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// License holders, through license-console: sign-in (with a license key or a sign-in
// link), their licenses as they see them, and the two things they may change themselves.
// Every holder call is checked here against the token's scope; the services then scope
// it by the token's tenant like any call.

extension GatewayService {
    /// For license-console's CONSOLE key: a holder token for the license whose key the person
    /// typed, or for the customer a sign-in link names. A wrong key counts against the
    /// person's failed sign-in limit and says only that no license has it here.
    func signInHolder(_ request: SignInHolderRequest, _ call: ServerCall, _ console: Caller) async throws -> SignInHolderResponse {
        let source = try failedAuthSource(call)
        try checkFailedAuth(source, call)
        let metadata = serviceMetadata(tenant: console.tenantId, actor: console.id)
        let now = clock.now
        let expiresAt = now + HolderTokens.holderTokenSeconds
        switch (request.licenseKey.isEmpty, request.linkToken.isEmpty) {
        case (false, true):
            guard request.licenseKey.utf8.count <= 100, (try? LicenseKey(parsing: request.licenseKey)) != nil || (try? ImportedKey(parsing: request.licenseKey)) != nil else {
                throw failedAuth(source, call, "this is not a license key: check it for typing mistakes (it looks like XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX)")
            }
            let license: License
            do {
                license = try await issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: request.licenseKey), metadata: metadata, deadline: call.deadline)
            } catch let error as RPCError where error.code == .notFound || error.code == .invalidArgument {
                throw failedAuth(source, call, "no license has this key: check it for typing mistakes")
            }
            let scope = HolderScope(tenant: console.tenantId, licenseID: license.id, customerID: "", expiresAt: expiresAt)
            return SignInHolderResponse(holderToken: holderTokens.token(scope), expiresAt: expiresAt, licenseId: license.id)
        case (true, false):
            guard let link = holderTokens.link(of: request.linkToken, now: now), link.tenant == console.tenantId else {
                throw failedAuth(source, call, "this sign-in link is not valid or has expired: ask for a new one")
            }
            let firstUse = try await database.write { db -> Bool in
                try db.execute(sql: "DELETE FROM used_sign_in_link WHERE expires_at <= ?", arguments: [now])
                try db.execute(sql: "INSERT OR IGNORE INTO used_sign_in_link (id, expires_at) VALUES (?, ?)", arguments: [link.id, link.expiresAt])
                return db.changesCount == 1
            }
            guard firstUse else { throw failedAuth(source, call, "this sign-in link has been used already: each link signs in once; ask for a new one") }
            let scope = HolderScope(tenant: link.tenant, licenseID: "", customerID: link.customerID, expiresAt: expiresAt)
            return SignInHolderResponse(holderToken: holderTokens.token(scope), expiresAt: expiresAt, customerId: link.customerID)
        default:
            throw RPCError.invalidArgument("sign in with one of license_key or link_token")
        }
    }

    /// Operators: a single-use sign-in link to the portal for one of their tenant's customers.
    func createSignInLink(_ request: CreateSignInLinkRequest, _ call: ServerCall, _ key: Caller) async throws -> CreateSignInLinkResponse {
        try Check.nonEmpty(request.customerId, "customer_id")
        try Check.length(request.customerId, "customer_id")
        guard (0...7 * 86400).contains(request.validSeconds) else {
            throw RPCError.invalidArgument("valid_seconds must be between 0 (one day) and 604800 (seven days)")
        }
        // The customer must exist in the caller's tenant (issuance answers NOT_FOUND otherwise).
        _ = try await issuance.call(IssuanceMethods.getCustomer, GetByIdRequest(id: request.customerId), metadata: call.metadata, deadline: call.deadline)
        let expiresAt = clock.now + (request.validSeconds == 0 ? 86400 : request.validSeconds)
        let link = SignInLink(id: EntityID.make("sil"), tenant: key.tenantId, customerID: request.customerId, expiresAt: expiresAt)
        return CreateSignInLinkResponse(token: holderTokens.link(link), expiresAt: expiresAt)
    }

    /// The holder's licenses, each with what the portal shows; a part whose service is down
    /// is missing and says why.
    func holderLicenses(_ request: HolderLicensesRequest, _ call: ServerCall, _ holder: Caller) async throws -> HolderLicensesResponse {
        let metadata = call.metadata
        let deadline = call.deadline
        var licenses: [License]
        if !holder.holderLicense.isEmpty {
            licenses = [try await issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(id: holder.holderLicense), metadata: metadata, deadline: deadline)]
        } else if !holder.holderCustomer.isEmpty {
            licenses = []
            var token = ""
            repeat {
                let page = try await issuance.call(
                    IssuanceMethods.listLicenses, ListLicensesRequest(customerId: holder.holderCustomer, page: PageRequest(pageSize: 100, pageToken: token)),
                    metadata: metadata, deadline: deadline)
                licenses += page.licenses
                token = page.nextPageToken
            } while !token.isEmpty && licenses.count < 500
        } else {
            throw RPCError(.permissionDenied, "HolderLicenses is for signed-in license holders")
        }
        var parts: [PartStatus] = []
        var answered: [HolderLicense] = []
        for license in licenses {
            let (view, failures) = await holderView(license, metadata: metadata, deadline: deadline)
            answered.append(view)
            for failure in failures where !parts.contains(where: { $0.service == failure.service }) { parts.append(failure) }
        }
        return HolderLicensesResponse(licenses: answered, parts: parts)
    }

    private func holderView(_ license: License, metadata: RPCMetadata, deadline: ContinuousClock.Instant) async -> (HolderLicense, [PartStatus]) {
        let now = clock.now
        async let policy = part("issuance") { try await self.issuance.call(IssuanceMethods.getPolicy, GetByIdRequest(id: license.policyId), metadata: metadata, deadline: deadline) }
        async let product = part("issuance") { try await self.issuance.call(IssuanceMethods.getProduct, GetByIdRequest(id: license.productId), metadata: metadata, deadline: deadline) }
        async let subscription = part("issuance") { try await self.issuance.call(IssuanceMethods.getSubscription, GetByIdRequest(id: license.id), metadata: metadata, deadline: deadline) }
        async let machines = part("validation") { try await self.validation.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: license.id), metadata: metadata, deadline: deadline) }
        async let seats = part("validation") { try await self.validation.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: license.id), metadata: metadata, deadline: deadline) }
        async let usage = part("usage") {
            try await self.usage.call(UsageMethods.getUsage, GetUsageRequest(licenseId: license.id, from: now - 30 * 86400, to: now), metadata: metadata, deadline: deadline)
        }
        async let quotas = part("usage") { try await self.usage.call(UsageMethods.listQuotas, ListQuotasRequest(licenseId: license.id), metadata: metadata, deadline: deadline) }
        async let renewal = part("integrations") { () async throws -> RenewalOptions in
            guard let integrations = self.integrations else { throw RPCError.unavailable("this installation runs without license-integrations") }
            return try await integrations.call(IntegrationsMethods.getRenewalOptions, GetByIdRequest(id: license.policyId), metadata: metadata, deadline: deadline)
        }
        async let plans = part("issuance") {
            try await self.issuance.call(IssuanceMethods.listPolicies, ListPoliciesRequest(productId: license.productId), metadata: metadata, deadline: deadline)
        }
        let (policyPart, productPart, subscriptionPart, machinesPart, seatsPart, usagePart, quotasPart, renewalPart) =
            await (policy, product, subscription, machines, seats, usage, quotas, renewal)
        let included = Set(license.features)
        var notIncluded: [String] = []
        for feature in ((try? await plans.result.get())?.policies ?? []).flatMap(\.features) where !included.contains(feature) && !notIncluded.contains(feature) {
            notIncluded.append(feature)
        }
        var failures = [policyPart.status, machinesPart.status, usagePart.status, quotasPart.status, renewalPart.status, seatsPart.status, productPart.status]
        if case .failure(let error) = subscriptionPart.result, error.code != .notFound { failures.append(subscriptionPart.status) }
        let view = HolderLicense(
            license: license, policy: try? policyPart.result.get(), product: try? productPart.result.get(), subscription: try? subscriptionPart.result.get(),
            machines: (try? machinesPart.result.get())?.machines ?? [], seats: (try? seatsPart.result.get())?.leases ?? [],
            usage: try? usagePart.result.get(), quotas: (try? quotasPart.result.get())?.quotas ?? [], renewal: try? renewalPart.result.get(),
            featuresNotIncluded: notIncluded.sorted())
        return (view, failures.filter { $0.code != .ok })
    }

    /// The holder frees one of their license's machines.
    func holderDeactivate(_ request: HolderDeactivateRequest, _ call: ServerCall, _ holder: Caller) async throws -> DeactivateResponse {
        try Check.nonEmpty(request.machineId, "machine_id")
        try await checkScope(request.licenseId, call, holder)
        return try await validation.call(
            ValidationMethods.deactivate, DeactivateRequest(licenseId: request.licenseId, machineId: request.machineId), metadata: call.metadata, deadline: call.deadline)
    }

    /// The holder downloads an offline license file for one of their machines.
    func holderOfflineLicense(_ request: HolderOfflineLicenseRequest, _ call: ServerCall, _ holder: Caller) async throws -> OfflineLicense {
        try Check.fingerprint(request.fingerprint)
        try await checkScope(request.licenseId, call, holder)
        return try await validation.call(
            ValidationMethods.createOfflineLicense,
            CreateOfflineLicenseRequest(fingerprint: request.fingerprint, validSeconds: request.validSeconds, licenseId: request.licenseId),
            metadata: call.metadata, deadline: call.deadline)
    }

    /// A license outside the holder's scope is answered as if it did not exist.
    private func checkScope(_ licenseID: String, _ call: ServerCall, _ holder: Caller) async throws {
        try Check.nonEmpty(licenseID, "license_id")
        try Check.length(licenseID, "license_id")
        let outside = RPCError.notFound("no license \(RPCError.quoted(licenseID, limit: 40)) among yours")
        if !holder.holderLicense.isEmpty {
            guard holder.holderLicense == licenseID else { throw outside }
            return
        }
        guard !holder.holderCustomer.isEmpty else { throw RPCError(.permissionDenied, "this call is for signed-in license holders") }
        do {
            let license = try await issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(id: licenseID), metadata: call.metadata, deadline: call.deadline)
            guard license.customerId == holder.holderCustomer else { throw outside }
        } catch let error as RPCError where error.code == .notFound {
            throw outside
        }
    }

    /// For license-console's CONSOLE key: the one reveal of a purchased key.
    func revealLicenseKey(_ request: RevealLicenseKeyRequest, _ call: ServerCall, _ console: Caller) async throws -> RevealLicenseKeyResponse {
        let source = try failedAuthSource(call)
        try checkFailedAuth(source, call)
        guard request.token.hasPrefix("lmr_"), request.token.utf8.count <= 100 else {
            throw failedAuth(source, call, "this is not a key reveal link: open the link from your purchase e-mail as it is")
        }
        do {
            // Without the caller's idempotency key: a revealed key is never kept for a retry.
            let revealed = try await issuance.call(
                IssuanceMethods.revealKey, RevealKeyRequest(token: request.token), metadata: serviceMetadata(tenant: console.tenantId, actor: console.id),
                deadline: call.deadline)
            return RevealLicenseKeyResponse(licenseId: revealed.licenseId, licenseKey: revealed.licenseKey)
        } catch let error as RPCError where error.code == .notFound {
            _ = failedAuth(source, call, error.message)
            throw error
        }
    }

    /// Metadata for a call the gateway makes on its own account within a tenant.
    func serviceMetadata(tenant: String, actor: String) -> RPCMetadata {
        var metadata = RPCMetadata()
        metadata[RPCMetadata.tenant] = tenant
        metadata[RPCMetadata.actor] = actor
        return metadata
    }
}
