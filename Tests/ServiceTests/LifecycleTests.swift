import Foundation
import GRDB
@testable import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import LicensingTestSupport
import Testing

/// Issuance's lifecycle beyond issue and revoke: renewals, entitlements, transfers, named
/// users, time-driven states, subscriptions, certificates, idempotency and the audit log.
@Suite struct LifecycleTests {
    let folder = TemporaryFolder()
    let clock = ManualLicenseClock(1_800_000_000)

    func makeService(ttl: Int64 = 86400) throws -> IssuanceService {
        try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, clock: clock, idempotencyTTL: ttl, logger: Logger(label: "test"))
    }

    func refused(_ code: StatusCode, _ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
        if let failure = await expectCode(code, body) {
            Issue.record(Comment(rawValue: failure), sourceLocation: sourceLocation)
        }
    }

    func policy(_ client: RPCClient, type: LicenseType, duration: Int64 = 0, grace: Int64 = 0, maxUsers: UInt32 = 0) async throws -> String {
        let product = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "P", code: "P\(UInt16.random(in: 0...9999))"))
        return try await client.call(
            IssuanceMethods.createPolicy,
            CreatePolicyRequest(policy: Policy(productId: product.id, name: "P", licenseType: type, durationSeconds: duration, graceSeconds: grace, maxUsers: maxUsers, features: ["a"])
            )
        ).id
    }

    func customer(_ client: RPCClient, enterprise: Bool = false) async throws -> String {
        try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "C", enterprise: enterprise)).id
    }

    @Test func renewChangeTransferAndNamedUsers() async throws {
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let yearly = try await policy(client, type: .perUser, duration: 1000, maxUsers: 2)
            let owner = try await customer(client)
            let license = try #require(try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: yearly, customerId: owner)).license)

            let renewed = try await client.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: license.id))
            #expect(renewed.expiresAt == license.expiresAt + 1000)
            let extended = try await client.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: license.id, extendTo: renewed.expiresAt + 5))
            #expect(extended.expiresAt == renewed.expiresAt + 5)
            await refused(.invalidArgument) { _ = try await client.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: license.id, extendTo: 5)) }

            let changed = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, features: ["b"], maxSeats: 7))
            #expect(changed.features == ["a", "b"])
            #expect(changed.maxSeats == 7)
            let replaced = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, features: ["c"], replaceFeatures: true))
            #expect(replaced.features == ["c"])

            _ = try await client.call(IssuanceMethods.assignUser, AssignUserRequest(id: license.id, user: "ann"))
            let two = try await client.call(IssuanceMethods.assignUser, AssignUserRequest(id: license.id, user: "bob"))
            #expect(two.namedUsers == ["ann", "bob"])
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.assignUser, AssignUserRequest(id: license.id, user: "cy")) }
            await refused(.alreadyExists) { _ = try await client.call(IssuanceMethods.assignUser, AssignUserRequest(id: license.id, user: "ann")) }
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, maxUsers: 1)) }
            let one = try await client.call(IssuanceMethods.unassignUser, AssignUserRequest(id: license.id, user: "ann"))
            #expect(one.namedUsers == ["bob"])
            await refused(.notFound) { _ = try await client.call(IssuanceMethods.unassignUser, AssignUserRequest(id: license.id, user: "ann")) }

            let buyer = try await customer(client)
            let moved = try await client.call(IssuanceMethods.transferLicense, TransferLicenseRequest(id: license.id, toCustomerId: buyer))
            #expect(moved.customerId == buyer)
            #expect(moved.namedUsers.isEmpty)
            await refused(.notFound) { _ = try await client.call(IssuanceMethods.transferLicense, TransferLicenseRequest(id: license.id, toCustomerId: "cus_none")) }

            _ = try await client.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: license.id))
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: license.id)) }
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.transferLicense, TransferLicenseRequest(id: license.id, toCustomerId: owner)) }
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, features: ["d"])) }

            let perpetual = try await policy(client, type: .perDevice)
            let forever = try #require(try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: perpetual, customerId: owner)).license)
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: forever.id)) }
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.assignUser, AssignUserRequest(id: forever.id, user: "ann")) }
        }
    }

    @Test func departmentsBelongToEnterpriseCustomers() async throws {
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let small = try await customer(client)
            let big = try await customer(client, enterprise: true)
            await refused(.failedPrecondition) {
                _ = try await client.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: small, name: "R&D"))
            }
            let department = try await client.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: big, name: "R&D", costCenter: "CC-100", maxSeats: 5))
            await refused(.alreadyExists) {
                _ = try await client.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: big, name: "R&D"))
            }
            #expect(try await client.call(IssuanceMethods.listDepartments, GetByIdRequest(id: big)).departments == [department])
            let enterprise = try await policy(client, type: .enterprise)
            let license = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: enterprise, customerId: big, departmentId: department.id))
            #expect(license.license?.departmentId == department.id)
            await refused(.notFound) {
                _ = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: enterprise, customerId: small, departmentId: department.id))
            }
        }
    }

    @Test func theSchedulerMovesLicensesThroughGraceToExpiredAndPublishesIt() async throws {
        let service = try makeService()
        try await withServer(service.router(), in: folder, name: "issuance") { client in
            let short = try await policy(client, type: .perDevice, duration: 100, grace: 50)
            let id = try #require(try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: short, customerId: try await customer(client))).license?.id)

            #expect(try await service.applyTimeTransitions() == 0)
            clock.advance(by: 100)
            #expect(try await service.applyTimeTransitions() == 1)
            #expect(try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).state == .inGrace)
            clock.advance(by: 49)
            #expect(try await service.applyTimeTransitions() == 0)
            clock.advance(by: 1)
            #expect(try await service.applyTimeTransitions() == 1)
            #expect(try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).state == .expired)
            let actions = try await client.call(IssuanceMethods.changes, ChangesRequest()).events.map(\.action)
            #expect(Array(actions.suffix(2)) == ["license.grace_started", "license.expired"])

            // A renewal brings it back.
            let renewed = try await client.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: id))
            #expect(renewed.state == .active)
            #expect(renewed.expiresAt == clock.now + 100)
        }
    }

    @Test func changesThatChangeNothingAreNotRecordedAndLimitsCanBeLifted() async throws {
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let enterprise = try await policy(client, type: .enterprise)
            let owner = try await customer(client, enterprise: true)
            let department = try await client.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: owner, name: "R&D"))
            let license = try #require(try await client.call(
                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: enterprise, customerId: owner, departmentId: department.id)).license)
            func audited() async throws -> Int {
                try await client.call(IssuanceMethods.listAuditEvents, ListAuditEventsRequest(limit: 1000)).events.count
            }
            let limited = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, maxMachines: 5, maxSeats: 3))
            #expect(limited.maxMachines == 5 && limited.maxSeats == 3)
            let before = try await audited()
            // Nothing new: answered, not recorded.
            let same = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, maxMachines: 5))
            #expect(same.maxMachines == 5)
            #expect(try await audited() == before)
            // Unlimited has its own spelling (0 means unchanged).
            let lifted = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, unlimitedMachines: true))
            #expect(lifted.maxMachines == 0 && lifted.maxSeats == 3)
            #expect(try await audited() == before + 1)
            await refused(.invalidArgument) {
                _ = try await client.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license.id, maxSeats: 2, unlimitedSeats: true))
            }
            // A license in a department does not silently leave it on a transfer.
            let other = try await customer(client, enterprise: true)
            await refused(.failedPrecondition) {
                _ = try await client.call(IssuanceMethods.transferLicense, TransferLicenseRequest(id: license.id, toCustomerId: other))
            }
            let otherDepartment = try await client.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: other, name: "Ops"))
            let moved = try await client.call(IssuanceMethods.transferLicense, TransferLicenseRequest(id: license.id, toCustomerId: other, toDepartmentId: otherDepartment.id))
            #expect(moved.customerId == other && moved.departmentId == otherDepartment.id)
        }
    }

    @Test func subscriptionsFollowBilling() async throws {
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let monthly = try await policy(client, type: .subscription, duration: 30 * 86400, grace: 7 * 86400)
            let owner = try await customer(client)
            await refused(.invalidArgument) {
                _ = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: monthly, customerId: owner))
            }
            let issued = try await client.call(
                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: monthly, customerId: owner, billingRef: "sub_stripe_1", amountMinor: 4900, currency: "EUR"))
            let license = try #require(issued.license)
            let start = try await client.call(IssuanceMethods.getSubscription, GetByIdRequest(id: license.id))
            #expect(start.status == .active)
            #expect(start.periodEnd == license.expiresAt)

            let next = RecordPaymentRequest(
                billingRef: "sub_stripe_1", periodStart: start.periodEnd, periodEnd: start.periodEnd + 30 * 86400, amountMinor: 4900, currency: "EUR", paymentId: "pay_1")
            let paid = try await client.call(IssuanceMethods.recordPayment, next)
            #expect(paid.periodEnd == next.periodEnd)
            #expect(try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license.id)).expiresAt == next.periodEnd)
            // Billing delivers the same payment twice: recorded once, audited once.
            let eventsBefore = try await client.call(IssuanceMethods.changes, ChangesRequest()).lastSeq
            let auditBefore = try await client.call(IssuanceMethods.listAuditEvents, ListAuditEventsRequest(limit: 1000)).events.count
            _ = try await client.call(IssuanceMethods.recordPayment, next)
            #expect(try await client.call(IssuanceMethods.changes, ChangesRequest()).lastSeq == eventsBefore)
            #expect(try await client.call(IssuanceMethods.listAuditEvents, ListAuditEventsRequest(limit: 1000)).events.count == auditBefore)
            await refused(.notFound) {
                _ = try await client.call(IssuanceMethods.recordPayment, RecordPaymentRequest(billingRef: "nope", periodStart: 1, periodEnd: 2, paymentId: "x"))
            }
            await refused(.invalidArgument) {
                _ = try await client.call(IssuanceMethods.recordPayment, RecordPaymentRequest(billingRef: "sub_stripe_1", periodStart: 5, periodEnd: 2, paymentId: "y"))
            }

            // A failed renewal payment keeps the period paid for; grace starts at its end.
            clock.advance(by: 86400)
            let failed = try await client.call(IssuanceMethods.recordPaymentFailure, RecordPaymentFailureRequest(billingRef: "sub_stripe_1", reason: "card declined"))
            #expect(failed.status == .pastDue)
            let pastDue = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license.id))
            #expect(pastDue.state == .active)
            #expect(pastDue.expiresAt == next.periodEnd, "the paid period was cut")
            #expect(pastDue.stateReason == "payment failed: card declined")
            // The next payment clears the failure.
            let later = RecordPaymentRequest(
                billingRef: "sub_stripe_1", periodStart: next.periodEnd, periodEnd: next.periodEnd + 30 * 86400, amountMinor: 4900, currency: "EUR", paymentId: "pay_2")
            #expect(try await client.call(IssuanceMethods.recordPayment, later).status == .active)
            let cleared = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license.id))
            #expect(cleared.stateReason == "")
            #expect(cleared.expiresAt == later.periodEnd)
            // A failure after the period has ended: grace runs from the failure.
            clock.set(later.periodEnd + 86400)
            _ = try await client.call(IssuanceMethods.recordPaymentFailure, RecordPaymentFailureRequest(billingRef: "sub_stripe_1"))
            let inGrace = try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: license.id))
            #expect(inGrace.state == .inGrace)
            #expect(inGrace.expiresAt == clock.now)
            #expect(inGrace.stateReason == "payment failed")

            let canceled = try await client.call(IssuanceMethods.cancelSubscription, CancelSubscriptionRequest(billingRef: "sub_stripe_1"))
            #expect(canceled.status == .canceled)
            #expect(!canceled.autoRenew)
            await refused(.failedPrecondition) {
                _ = try await client.call(IssuanceMethods.cancelSubscription, CancelSubscriptionRequest(billingRef: "sub_stripe_1"))
            }

            let other = try await client.call(
                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: monthly, customerId: owner, billingRef: "sub_stripe_2"))
            _ = try await client.call(IssuanceMethods.cancelSubscription, CancelSubscriptionRequest(billingRef: "sub_stripe_2", immediately: true))
            #expect(try await client.call(IssuanceMethods.getLicense, GetLicenseRequest(id: other.license!.id)).state == .expired)
            await refused(.alreadyExists) {
                _ = try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: monthly, customerId: owner, billingRef: "sub_stripe_2"))
            }
        }
    }

    @Test func certificatesVerifyWithThePublicKeysAcrossRotation() async throws {
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let perpetual = try await policy(client, type: .perDevice)
            let id = try #require(try await client.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: perpetual, customerId: try await customer(client))).license?.id)
            let first = try await client.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: id, fingerprint: "machine-1", validSeconds: 3600))
            func keys() async throws -> [String: [UInt8]] {
                Dictionary(uniqueKeysWithValues: try await client.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys.map { ($0.kid, $0.publicKey) })
            }
            var published = try await keys()
            let payload = try LicenseCertificates.verify(first.armored, publicKeys: published, now: clock.now, fingerprint: "machine-1")
            #expect(payload.licenseId == id)
            #expect(payload.notAfter == clock.now + 3600)
            #expect(throws: CertificateError.fingerprintMismatch) {
                try LicenseCertificates.verify(first.armored, publicKeys: published, now: clock.now, fingerprint: "machine-2")
            }
            #expect(throws: CertificateError.expired(clock.now + 3600)) {
                try LicenseCertificates.verify(first.armored, publicKeys: published, now: clock.now + 3600, fingerprint: "machine-1")
            }

            let rotated = try await client.call(IssuanceMethods.rotateSigningKey, CreateSigningKeyRequest())
            #expect(rotated.kid != first.kid)
            let second = try await client.call(IssuanceMethods.issueCertificate, IssueCertificateRequest(licenseId: id))
            #expect(second.kid == rotated.kid)
            // The old key keeps verifying until it is retired.
            published = try await keys()
            _ = try LicenseCertificates.verify(first.armored, publicKeys: published, now: clock.now)
            await refused(.failedPrecondition) { _ = try await client.call(IssuanceMethods.retireSigningKey, GetByIdRequest(id: rotated.kid)) }
            _ = try await client.call(IssuanceMethods.retireSigningKey, GetByIdRequest(id: first.kid))
            published = try await keys()
            #expect(throws: CertificateError.unknownKey(first.kid)) {
                try LicenseCertificates.verify(first.armored, publicKeys: published, now: clock.now)
            }
            _ = try LicenseCertificates.verify(second.armored, publicKeys: published, now: clock.now)

            // A changed byte is caught.
            var bytes = try #require(Armor.decode(LicenseCertificates.label, second.armored))
            bytes[bytes.count / 2] ^= 0x01
            #expect(throws: CertificateError.self) {
                try LicenseCertificates.verify(Armor.encode(LicenseCertificates.label, bytes), publicKeys: published, now: clock.now)
            }
        }
        // Private keys are stored sealed: they open only with the master key.
        let pool = try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite")
        let sealed = try await pool.read { db in try Row.fetchAll(db, sql: "SELECT kid, sealed_private_key FROM signing_key").map { ($0["kid"] as String, Array($0["sealed_private_key"] as Data)) } }
        #expect(sealed.count == 2)
        for (kid, bytes) in sealed {
            #expect(bytes.count > 32)
            _ = try testMasterKey.open(bytes, context: kid)
            let other = try MasterKey(bytes: Array(repeating: 1, count: 32))
            #expect(throws: MasterKeyError.unknownVersion(testMasterKey.currentVersion)) { try other.open(bytes, context: kid) }
        }
    }

    @Test func idempotencyKeysReturnTheFirstAnswer() async throws {
        let service = try makeService(ttl: 60)
        try await withServer(service.router(), in: folder, name: "issuance") { client in
            let retry: RPCMetadata = [RPCMetadata.idempotencyKey: "crm-order-42"]
            let first = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"), metadata: retry)
            let again = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"), metadata: retry)
            #expect(again == first)
            #expect(try await client.call(IssuanceMethods.listCustomers, ListCustomersRequest()).customers.count == 1)
            await refused(.alreadyExists) {
                _ = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Other"), metadata: retry)
            }
            await refused(.invalidArgument) {
                _ = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"), metadata: [RPCMetadata.idempotencyKey: ""])
            }
            // Keys expire after the configured time.
            clock.advance(by: 61)
            try await service.applyTimeTransitions()
            let later = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"), metadata: retry)
            #expect(later.id != first.id)
        }
    }

    @Test func theAuditChainCatchesAnEditedRow() async throws {
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let owner = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme"), metadata: [RPCMetadata.actor: "crm-sync"])
            _ = try await policy(client, type: .perDevice)
            let events = try await client.call(IssuanceMethods.listAuditEvents, ListAuditEventsRequest())
            #expect(events.events.map(\.action) == ["customer.create", "product.create", "policy.create"])
            #expect(events.events[0].actor == "crm-sync")
            #expect(events.events[0].target == owner.id)
            #expect(events.events[1].prevHash == events.events[0].hash)
            let intact = try await client.call(IssuanceMethods.verifyAuditChain, VerifyAuditChainRequest())
            #expect(intact.intact)
            #expect(intact.rowsChecked == 3)
        }
        let pool = try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite")
        // The table refuses changes...
        await #expect(throws: DatabaseError.self) {
            try await pool.write { db in try db.execute(sql: "UPDATE audit_event SET actor = 'someone else' WHERE seq = 2") }
        }
        // ...and someone who goes around that is caught by the chain.
        try await pool.write { db in
            try db.execute(sql: "DROP TRIGGER audit_event_no_update")
            try db.execute(sql: "UPDATE audit_event SET actor = 'someone else' WHERE seq = 2")
        }
        try await withServer(try makeService().router(), in: folder, name: "issuance") { client in
            let broken = try await client.call(IssuanceMethods.verifyAuditChain, VerifyAuditChainRequest())
            #expect(!broken.intact)
            #expect(broken.firstBrokenSeq == 2)
            #expect(broken.rowsChecked == 1)
        }
    }
}
