import LicensingRPC
import LicensingWire

// API keys: created, listed and revoked within the caller's tenant; the operator's keys
// reach every tenant.

extension GatewayService {
    /// Admins create keys in their own tenant; operators (admins of the operator tenant) in any.
    func createApiKey(_ request: CreateApiKeyRequest, _ call: ServerCall, _ key: Caller) async throws -> CreateApiKeyResponse {
        guard !request.name.isEmpty, request.name.count <= 200 else { throw RPCError.invalidArgument("name is required (at most 200 characters)") }
        guard Role.allKnown.contains(request.role), request.role != .unspecified, request.role != .holder else {
            throw RPCError.invalidArgument("role must be ADMIN, ISSUER, SUPPORT, AUDITOR, INTEGRATION, PRODUCT or CONSOLE")
        }
        let tenant = request.tenantId.isEmpty ? key.tenantId : request.tenantId
        guard tenant == key.tenantId || key.tenantId == CredentialStore.operatorTenant else {
            throw RPCError(.permissionDenied, "an admin of tenant \(key.tenantId) may not create keys for tenant \(tenant)")
        }
        guard tenant.count <= 100, tenant.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw RPCError.invalidArgument("tenant_id may hold only letters, digits, '-' and '_'")
        }
        let now = clock.now
        guard request.expiresAt == 0 || request.expiresAt > now else { throw RPCError.invalidArgument("expires_at is in the past") }
        let (created, secret) = try await credentials.create(name: request.name, tenant: tenant, role: request.role, expiresAt: request.expiresAt, now: now)
        return CreateApiKeyResponse(apiKey: created, secret: secret)
    }

    func listApiKeys(_ request: ListApiKeysRequest, _ call: ServerCall, _ key: Caller) async throws -> ListApiKeysResponse {
        let operatorKey = key.tenantId == CredentialStore.operatorTenant
        let tenant: String? = operatorKey ? (request.tenantId.isEmpty ? nil : request.tenantId) : key.tenantId
        return ListApiKeysResponse(apiKeys: credentials.list(tenant: tenant))
    }

    func revokeApiKey(_ request: GetByIdRequest, _ call: ServerCall, _ key: Caller) async throws -> ApiKey {
        guard !request.id.isEmpty else { throw RPCError.invalidArgument("id is required") }
        return try await credentials.revoke(id: request.id, tenant: key.tenantId == CredentialStore.operatorTenant ? nil : key.tenantId, now: clock.now)
    }
}

extension GatewayService {
    func whoAmI(_ request: WhoAmIRequest, _ call: ServerCall, _ caller: Caller) async throws -> WhoAmIResponse {
        guard let key = credentials.list(tenant: caller.tenantId).first(where: { $0.id == caller.id }) else {
            throw RPCError(.unauthenticated, "the credential of this call is no longer known")
        }
        return WhoAmIResponse(apiKey: key, allowedMethods: Permissions.allowed(key))
    }
}
