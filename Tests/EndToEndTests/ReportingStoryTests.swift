import Foundation
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The real executables: a vendor issues, a product activates and records usage, billing
/// records payments — and the reports show it within seconds, to that tenant only.
@Suite(.serialized) struct ReportingStoryTests {
    @Test func reportsShowWhatHappenedToTheirTenantOnly() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let operatorClient = stack.gatewayClient()
        defer { Task { await operatorClient.close() } }
        var secrets: [String: String] = [:]
        func client(_ tenant: String, _ role: Role) async throws -> RPCClient {
            let secret = try await operatorClient.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "\(tenant) \(role)", tenantId: tenant, role: role)).secret
            secrets["\(tenant) \(role)"] = secret
            return RPCClient(endpoint: stack.endpoint("gateway"), configuration: RPCClientConfiguration(connections: 1, metadata: [RPCMetadata.apiKey: secret]))
        }
        let acme = try await client("acme", .admin)
        let globex = try await client("globex", .admin)
        let auditor = try await client("acme", .auditor)
        let product = try await client("acme", .product)

        let created = try await acme.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Render Farm", code: "RF"))
        let policy = try await acme.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(
                productId: created.id, name: "Monthly", licenseType: .subscription, durationSeconds: 30 * 86400, maxMachines: 3, features: ["render"])))
        let customer = try await acme.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Initech", email: "it@initech.test"))
        let issued = try await acme.call(
            IssuanceMethods.issueLicense,
            IssueLicenseRequest(policyId: policy.id, customerId: customer.id, billingRef: "sub_42", amountMinor: 4900, currency: "EUR"))
        let license = issued.license!.id
        _ = try await acme.call(
            IssuanceMethods.recordPayment,
            RecordPaymentRequest(billingRef: "sub_42", periodStart: issued.license!.startsAt, periodEnd: issued.license!.expiresAt, amountMinor: 4900, currency: "EUR", paymentId: "pi_1"))
        #expect(try await product.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "node-1")).reason == .valid)
        _ = try await product.call(UsageMethods.recordUsage, RecordUsageRequest(events: [
            UsageEvent(eventId: "r1", licenseKey: issued.licenseKey, feature: "render", quantity: 120),
            UsageEvent(eventId: "r2", licenseKey: issued.licenseKey, feature: "render", quantity: 30),
        ]))

        // Within seconds: usage, machines, payments, the renewal pipeline.
        var usage = UsageReportResponse()
        let shown = try await eventually(within: .seconds(20), every: .milliseconds(200)) {
            usage = try await auditor.call(ReportingMethods.usageReport, ReportRequest())
            return usage.rows.first?.quantity == 150 && usage.rows.first?.activeMachines == 1
        }
        #expect(shown, "\(usage)")
        #expect(usage.rows.map(\.licenseId) == [license] && usage.rows.first?.customerName == "Initech")
        let revenue = try await auditor.call(ReportingMethods.revenueReport, ReportRequest())
        #expect(revenue.rows.map { "\($0.productId) \($0.currency) \($0.amountMinor) \($0.payments)" } == ["\(created.id) EUR 4900 1"])
        #expect(revenue.recurring.first?.currency == "EUR" && revenue.recurring.first?.subscriptions == 1)
        let renewals = try await auditor.call(ReportingMethods.renewalPipeline, ReportRequest(days: 31))
        #expect(renewals.rows.map(\.licenseId) == [license] && renewals.rows.first?.autoRenew == true)
        let compliance = try await auditor.call(ReportingMethods.complianceReport, ReportRequest())
        #expect(compliance.compliantLicenses == 1 && compliance.violatingLicenses == 0 && compliance.auditChainIntact)

        // Another tenant sees none of it.
        #expect(try await globex.call(ReportingMethods.usageReport, ReportRequest()).rows.isEmpty)
        #expect(try await globex.call(ReportingMethods.revenueReport, ReportRequest()).rows.isEmpty)
        #expect(try await globex.call(ReportingMethods.renewalPipeline, ReportRequest(days: 31)).rows.isEmpty)
        let theirs = try await globex.call(ReportingMethods.complianceReport, ReportRequest())
        #expect(theirs.licenseStates.isEmpty && theirs.compliantLicenses == 0)
        var exported: [UInt8] = []
        for try await chunk in try await globex.stream(ReportingMethods.export, ExportRequest(report: "usage", format: "csv")) { exported += chunk.data }
        #expect(String(decoding: exported, as: UTF8.self).split(separator: "\r\n").count == 1, "only the header row")
        // A product key reads no report.
        await #expect(throws: RPCError.self) { _ = try await product.call(ReportingMethods.usageReport, ReportRequest()) }

        // licensectl, with the tenant's auditor key: a table, CSV, and an export to a file.
        let key = ["--api-key", secrets["acme AUDITOR"] ?? secrets["acme auditor"] ?? ""]
        let (status, text) = try await stack.ctl(["report", "usage"] + key)
        #expect(status == 0 && text.contains("LICENSE") && text.contains(license) && text.contains("150"), "\(text)")
        let (csvStatus, csv) = try await stack.ctl(["report", "revenue", "--csv"] + key)
        #expect(csvStatus == 0 && csv.hasPrefix("month,product_id,currency,amount_minor,payments") && csv.contains("EUR,4900,1"), "\(csv)")
        let file = stack.folder + "/usage.jsonl"
        let (exportStatus, exportText) = try await stack.ctl(["export", "usage", "--format", "jsonl", "--output", file] + key)
        #expect(exportStatus == 0 && exportText.contains("wrote 1 rows"), "\(exportText)")
        let line = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").first.map(String.init) ?? ""
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        #expect(object?["license_id"] as? String == license && object?["quantity"] as? Int == 150)
        let (badStatus, badText) = try await stack.ctl(["export", "sales", "--output", file])
        #expect(badStatus == 2 && badText.contains("usage, compliance, revenue or renewals"), "\(badText)")
        for client in [acme, globex, auditor, product] { await client.close() }
    }
}
