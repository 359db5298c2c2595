import LicensingRPC
import LicensingWire

/// Which roles may call which method: the one table the gateway checks every call against.
/// Deny by default: a method absent from the table is open to admins only.
///
/// Tenants: a tenant's admin manages that tenant only (the services scope every call by the
/// tenant the gateway vouches for). Methods that act on every tenant at once belong to the
/// operator, an admin or auditor of the operator tenant. The change feeds and the
/// per-service erasures are for the services behind the gateway, never for an API key: the
/// issuance feed carries sealed signing keys.
enum Permissions {
    /// Reached only on the services' own sockets.
    static let servicesOnly: Set<String> = [
        IssuanceMethods.changes.name, IssuanceMethods.watchChanges.name, UsageMethods.feed.name, ValidationMethods.events.name,
        IssuanceMethods.eraseCustomer.name, ValidationMethods.eraseCustomer.name, UsageMethods.eraseCustomer.name,
        ReportingMethods.eraseCustomer.name, IntegrationsMethods.eraseCustomer.name, ValidationMethods.resolveLicenses.name,
        IssuanceMethods.revealKey.name, IssuanceMethods.exportCustomer.name, ValidationMethods.exportCustomer.name, UsageMethods.exportCustomer.name,
        ReportingMethods.exportCustomer.name, IntegrationsMethods.exportCustomer.name,
        ValidationMethods.replicaMachines.name, ValidationMethods.appendReplicaLog.name,
    ]
    /// A holder token reaches these and nothing else; no API key reaches them.
    static let holderOnly: Set<String> = [
        GatewayMethods.holderLicenses.name, GatewayMethods.holderDeactivate.name, GatewayMethods.holderOfflineLicense.name,
    ]
    /// license-console's own credential reaches these and nothing else, and no other key does.
    static let consoleOnly: Set<String> = [GatewayMethods.signInHolder.name, GatewayMethods.revealLicenseKey.name]
    /// Signing keys are shared by every tenant, and the audit chain spans them all.
    static let operatorOnly: Set<String> = [
        IssuanceMethods.createSigningKey.name, IssuanceMethods.rotateSigningKey.name, IssuanceMethods.retireSigningKey.name,
        IssuanceMethods.verifyAuditChain.name, GatewayMethods.backup.name, IssuanceMethods.rewrapSecrets.name, ValidationMethods.rewrapSecrets.name,
    ]

    static let table: [String: Set<Role>] = {
        var table: [String: Set<Role>] = [:]
        func allow(_ roles: Set<Role>, _ methods: [WireMethodInfo]) {
            for method in methods { table[method.name, default: []].formUnion(roles) }
        }
        let readers: Set<Role> = [.issuer, .support, .auditor, .integration]

        // Catalogue, customers and licenses: issuers change them, support and auditors read them.
        allow(readers, [
            IssuanceMethods.getProduct.info, IssuanceMethods.listProducts.info, IssuanceMethods.getPolicy.info,
            IssuanceMethods.listPolicies.info, IssuanceMethods.getCustomer.info, IssuanceMethods.listCustomers.info,
            IssuanceMethods.listDepartments.info, IssuanceMethods.getLicense.info, IssuanceMethods.listLicenses.info,
            IssuanceMethods.getSubscription.info, ValidationMethods.listMachines.info, ValidationMethods.listSeats.info,
            GatewayMethods.licenseOverview.info,
        ])
        allow([.issuer], [
            IssuanceMethods.createProduct.info, IssuanceMethods.updateProduct.info, IssuanceMethods.createPolicy.info,
            IssuanceMethods.updatePolicy.info, IssuanceMethods.createCustomer.info, IssuanceMethods.updateCustomer.info,
            IssuanceMethods.createDepartment.info, IssuanceMethods.updateDepartment.info, IssuanceMethods.issueLicense.info, IssuanceMethods.suspendLicense.info,
            IssuanceMethods.reinstateLicense.info, IssuanceMethods.revokeLicense.info, IssuanceMethods.renewLicense.info,
            IssuanceMethods.changeEntitlements.info, IssuanceMethods.transferLicense.info, IssuanceMethods.assignUser.info,
            IssuanceMethods.unassignUser.info, IssuanceMethods.issueCertificate.info, ValidationMethods.createOfflineLicense.info,
        ])
        allow([.console], [GatewayMethods.signInHolder.info, GatewayMethods.revealLicenseKey.info])
        allow([.issuer, .support, .auditor, .integration, .product], [GatewayMethods.whoAmI.info])
        // Support helps customers: frees a machine, sends a sign-in link to the portal.
        allow([.issuer, .support], [ValidationMethods.deactivate.info, GatewayMethods.createSignInLink.info])
        // Billing, CRM and ERP systems: customers, departments, licenses from orders, payments.
        allow([.integration], [
            IssuanceMethods.createCustomer.info, IssuanceMethods.updateCustomer.info, IssuanceMethods.createDepartment.info,
            IssuanceMethods.updateDepartment.info, IssuanceMethods.issueLicense.info, IssuanceMethods.renewLicense.info, IssuanceMethods.recordPayment.info,
            IssuanceMethods.recordPaymentFailure.info, IssuanceMethods.cancelSubscription.info,
        ])
        // Auditors: reports and the audit log.
        allow([.auditor], [IssuanceMethods.listAuditEvents.info, IssuanceMethods.verifyAuditChain.info] + ReportingMethods.all.filter {
            $0.name != ReportingMethods.eraseCustomer.name
        })
        allow([.support, .auditor], [GatewayMethods.health.info])
        // Usage and compliance: support and auditors read; issuers also set quotas and
        // acknowledge alerts.
        allow([.issuer, .support, .auditor], [UsageMethods.getUsage.info, UsageMethods.listAlerts.info, UsageMethods.listQuotas.info])
        allow([.issuer], [UsageMethods.setQuota.info, UsageMethods.acknowledgeAlert.info])
        // Integrations: admins manage endpoints, mappings and secrets (the table's default);
        // integration keys and auditors read what was delivered.
        allow([.integration, .auditor], [
            IntegrationsMethods.listWebhookEndpoints.info, IntegrationsMethods.listDeliveries.info, IntegrationsMethods.listPriceMappings.info,
        ])
        // Client products.
        allow([.product], [
            ValidationMethods.validate.info, ValidationMethods.activate.info, ValidationMethods.deactivate.info,
            ValidationMethods.checkoutSeat.info, ValidationMethods.heartbeatSeat.info, ValidationMethods.checkinSeat.info,
            ValidationMethods.createOfflineLicense.info, UsageMethods.recordUsage.info, UsageMethods.reportTamper.info,
        ])
        // The public key set verifies certificates: anyone with a credential may read it.
        allow([.issuer, .support, .auditor, .integration, .product], [IssuanceMethods.listPublicKeys.info])
        return table
    }()

    /// Whether the role may call the method (in the operator tenant, for operator methods).
    static func allows(_ role: Role, _ method: String) -> Bool {
        switch role {
        case .holder: return holderOnly.contains(method)
        case .console: return consoleOnly.contains(method)
        default: return !servicesOnly.contains(method) && !holderOnly.contains(method) && !consoleOnly.contains(method) && roleAllows(role, method)
        }
    }

    /// The table alone: admins may call everything it does not keep from them.
    private static func roleAllows(_ role: Role, _ method: String) -> Bool {
        role == .admin || (table[method]?.contains(role) ?? false)
    }

    /// Every method the role may call, for WhoAmI (operator-only methods need the operator tenant too).
    static func allowed(_ key: ApiKey) -> [String] {
        WireServices.all.flatMap { service in service.methods.map(\.fullName) }.filter { refusal(key, $0) == nil }.sorted()
    }

    /// Why a holder token may not call the method, or nil when it may.
    static func holderRefusal(_ method: String) -> RPCError? {
        holderOnly.contains(method) ? nil : RPCError(.permissionDenied, "a license holder's sign-in may not call \(method)")
    }

    /// Why this credential may not call the method, or nil when it may.
    static func refusal(_ key: ApiKey, _ method: String) -> RPCError? {
        if servicesOnly.contains(method) {
            return RPCError(.permissionDenied, "\(method) is for the services behind the gateway; no API key may call it")
        }
        if holderOnly.contains(method) {
            return RPCError(.permissionDenied, "\(method) is for signed-in license holders; an API key may not call it")
        }
        if consoleOnly.contains(method) != (key.role == .console) {
            return RPCError(.permissionDenied, key.role == .console
                ? "a CONSOLE key may only sign license holders in and reveal purchased keys, not call \(method)"
                : "\(method) is for license-console's own CONSOLE key")
        }
        guard roleAllows(key.role, method) else {
            return RPCError(.permissionDenied, "role \(key.role) may not call \(method)")
        }
        if operatorOnly.contains(method), key.tenantId != CredentialStore.operatorTenant {
            return RPCError(
                .permissionDenied,
                "\(method) acts on every tenant: only the operator (an admin of tenant '\(CredentialStore.operatorTenant)') may call it")
        }
        return nil
    }
}
