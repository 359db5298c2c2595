import LicensingWire

/// Which roles may call which method: the one table the gateway checks every call against.
/// Deny by default: a method absent from the table is open to admins only. Admins may call
/// everything.
enum Permissions {
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
            IssuanceMethods.createDepartment.info, IssuanceMethods.issueLicense.info, IssuanceMethods.suspendLicense.info,
            IssuanceMethods.reinstateLicense.info, IssuanceMethods.revokeLicense.info, IssuanceMethods.renewLicense.info,
            IssuanceMethods.changeEntitlements.info, IssuanceMethods.transferLicense.info, IssuanceMethods.assignUser.info,
            IssuanceMethods.unassignUser.info, IssuanceMethods.issueCertificate.info, ValidationMethods.createOfflineLicense.info,
        ])
        // Billing, CRM and ERP systems: customers, departments, licenses from orders, payments.
        allow([.integration], [
            IssuanceMethods.createCustomer.info, IssuanceMethods.updateCustomer.info, IssuanceMethods.createDepartment.info,
            IssuanceMethods.issueLicense.info, IssuanceMethods.renewLicense.info, IssuanceMethods.recordPayment.info,
            IssuanceMethods.recordPaymentFailure.info, IssuanceMethods.cancelSubscription.info,
        ])
        // Auditors: reports and the audit log.
        allow([.auditor], [IssuanceMethods.listAuditEvents.info, IssuanceMethods.verifyAuditChain.info] + ReportingMethods.all.filter {
            $0.name != ReportingMethods.eraseCustomer.name
        })
        allow([.support, .auditor], [UsageMethods.getUsage.info, UsageMethods.listAlerts.info, GatewayMethods.health.info])
        // Client products.
        allow([.product], [
            ValidationMethods.validate.info, ValidationMethods.activate.info, ValidationMethods.deactivate.info,
            ValidationMethods.checkoutSeat.info, ValidationMethods.heartbeatSeat.info, ValidationMethods.checkinSeat.info,
            ValidationMethods.createOfflineLicense.info, UsageMethods.recordUsage.info,
        ])
        // The public key set verifies certificates: anyone with a credential may read it.
        allow([.issuer, .support, .auditor, .integration, .product], [IssuanceMethods.listPublicKeys.info])
        return table
    }()

    static func allows(_ role: Role, _ method: String) -> Bool {
        role == .admin || (table[method]?.contains(role) ?? false)
    }
}
