import Foundation
import GRDB
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import LicensingTestSupport
import Testing
import ValidationService

/// Activation, seats, offline files, geo rules and signed answers.
@Suite struct ValidationFeatureTests {
    func issue(_ issuance: RPCClient, _ policy: String, _ customer: String, department: String = "") async throws -> IssueLicenseResponse {
        try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer, departmentId: department))
    }

    func validate(_ client: RPCClient, _ key: String, fingerprint: String = "", user: String = "", region: String = "", ip: String = "", nonce: [UInt8] = []) async throws -> ValidateResponse {
        try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: fingerprint, user: user, region: region, clientIp: ip, nonce: nonce))
    }

    func activate(_ client: RPCClient, _ key: String, _ fingerprint: String, user: String = "", region: String = "") async throws -> ActivateResponse {
        try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: fingerprint, machineName: fingerprint, platform: "linux", user: user, region: region))
    }

    @Test func nodeLockedLicensesWithinTheirMachineLimitAndOverage() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            // 2 machines with 1.5x overage: 3 activations fit, the 4th does not.
            let (policy, customer) = try await seedCatalogue(issuance, type: .perDevice, maxMachines: 2, overage: 1500)
            let key = try await issue(issuance, policy, customer).licenseKey

            #expect(try await validate(validation, key).reason == .notActivated)
            #expect(try await validate(validation, key, fingerprint: "m1").reason == .notActivated)
            let first = try await activate(validation, key, "m1")
            #expect(first.reason == .valid)
            #expect(first.machine?.fingerprintHash == LicenseCertificates.fingerprintHash("m1"))
            #expect(first.certificate.contains("BEGIN LICENSE CERTIFICATE"))
            #expect(try await validate(validation, key, fingerprint: "m1").reason == .valid)
            #expect(try await validate(validation, key, fingerprint: "m9").reason == .fingerprintMismatch)
            // Activating the same machine again uses no new slot.
            #expect(try await activate(validation, key, "m1").machine?.id == first.machine?.id)
            #expect(try await activate(validation, key, "m2").reason == .valid)
            #expect(try await activate(validation, key, "m3").reason == .valid)
            #expect(try await activate(validation, key, "m4").reason == .machineLimit)

            let licenseID = first.machine!.licenseId
            let machines = try await validation.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: licenseID))
            #expect(machines.machines.count == 3)
            #expect(try await validate(validation, key, fingerprint: "m2").reason == .valid)
            _ = try await validation.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "m2"))
            // Look-ups see the deactivation as soon as it has returned.
            #expect(try await validate(validation, key, fingerprint: "m2").reason == .fingerprintMismatch)
            #expect(try await activate(validation, key, "m4").reason == .valid)
            // Deactivating again is safe: nothing more is freed.
            #expect(try await validation.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "m2")).deactivated == false)

            // The certificate verifies with issuance's published keys and is bound to the machine.
            let keys = Dictionary(uniqueKeysWithValues: try await issuance.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys.map { ($0.kid, $0.publicKey) })
            let payload = try LicenseCertificates.verify(first.certificate, publicKeys: keys, now: SystemLicenseClock().now, fingerprint: "m1")
            #expect(payload.licenseId == licenseID)
        }
    }

    @Test func departmentQuotasCapMachinesAcrossLicenses() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let customer = try await issuance.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Big Co", enterprise: true)).id
            let department = try await issuance.call(IssuanceMethods.createDepartment, CreateDepartmentRequest(customerId: customer, name: "R&D", maxMachines: 2)).id
            let (policy, _) = try await seedCatalogue(issuance, type: .enterprise)
            let a = try await issue(issuance, policy, customer, department: department).licenseKey
            let b = try await issue(issuance, policy, customer, department: department).licenseKey
            #expect(try await activate(validation, a, "x1").reason == .valid)
            #expect(try await activate(validation, b, "x2").reason == .valid)
            let third = try await activate(validation, b, "x3")
            #expect(third.reason == .machineLimit)
            #expect(third.detail.contains(department))
        }
    }

    @Test func perUserLicensesCheckTheNamedUser() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance, type: .perUser, maxUsers: 1)
            let issued = try await issue(issuance, policy, customer)
            _ = try await issuance.call(IssuanceMethods.assignUser, AssignUserRequest(id: issued.license!.id, user: "ann"))
            #expect(try await validate(validation, issued.licenseKey, user: "ann").reason == .valid)
            #expect(try await validate(validation, issued.licenseKey, user: "bob").reason == .userLimit)
            #expect(try await validate(validation, issued.licenseKey).reason == .notActivated)
            #expect(try await activate(validation, issued.licenseKey, "ann-laptop", user: "bob").reason == .userLimit)
            #expect(try await activate(validation, issued.licenseKey, "ann-laptop", user: "ann").reason == .valid)
        }
    }

    @Test func activationsAreRateLimitedPerLicense() async throws {
        var options = ValidationService.Options()
        options.activationsPerHour = 3
        try await withIssuanceAndValidation(options: options) { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance)
            let key = try await issue(issuance, policy, customer).licenseKey
            let other = try await issue(issuance, policy, customer).licenseKey
            for index in 0..<3 { #expect(try await activate(validation, key, "r\(index)").reason == .valid) }
            let limited = await expectCode(.resourceExhausted) { _ = try await activate(validation, key, "r4") }
            #expect(limited == nil, "\(limited ?? "")")
            #expect(try await activate(validation, other, "r4").reason == .valid)
        }
    }

    @Test func seatsNeverExceedTheLimitUnder100ConcurrentClients() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            // 4 seats with 1.25x overage: at most 5 holders at once.
            let (policy, customer) = try await seedCatalogue(issuance, maxSeats: 4, overage: 1250)
            let issued = try await issue(issuance, policy, customer)
            let key = issued.licenseKey
            let licenseID = issued.license!.id
            let granted = try await withThrowingTaskGroup(of: String?.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        let response = try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "client-\(index)"))
                        #expect(response.reason == .valid || response.reason == .seatLimit)
                        #expect(response.seatsInUse <= 5)
                        return response.reason == .valid ? response.lease?.leaseId : nil
                    }
                }
                var leases: [String] = []
                for try await lease in group { if let lease { leases.append(lease) } }
                return leases
            }
            #expect(granted.count == 5)
            let holders = try await validation.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: licenseID))
            #expect(holders.leases.count == 5)
            #expect(holders.seatLimit == 5)

            // Churn: check in and out from many clients at once; the invariant holds throughout.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lease in granted {
                    group.addTask { _ = try await validation.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease)) }
                }
                for index in 100..<200 {
                    group.addTask {
                        let response = try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "client-\(index)"))
                        #expect(response.seatsInUse <= 5)
                    }
                }
                try await group.waitForAll()
            }
            let after = try await validation.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: licenseID))
            #expect(after.leases.count <= 5)
        }
    }

    @Test func expiredLeasesAreReclaimedAndTheQueueIsServedInOrder() async throws {
        let clock = ManualLicenseClock(SystemLicenseClock().now)
        try await withIssuanceAndValidation(clock: clock) { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance, maxSeats: 1)
            let issued = try await issue(issuance, policy, customer)
            let key = issued.licenseKey
            func checkout(_ client: String, queue: Bool = false) async throws -> SeatLeaseResponse {
                try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: client, ttlSeconds: 60, queue: queue))
            }
            let holder = try await checkout("crashes")
            #expect(holder.reason == .valid)
            #expect(try await checkout("no-wait").reason == .seatLimit)
            #expect(try await checkout("first", queue: true).queuePosition == 1)
            #expect(try await checkout("second", queue: true).queuePosition == 2)
            #expect(try await checkout("first", queue: true).queuePosition == 1)

            // The holder heartbeats once, then crashes: its seat comes back after the TTL.
            clock.advance(by: 30)
            _ = try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: holder.lease!.leaseId))
            clock.advance(by: 59)
            #expect(try await checkout("first", queue: true).reason == .seatLimit)
            clock.advance(by: 2)
            // The seat goes to the head of the line, not to whoever asks first.
            #expect(try await checkout("second", queue: true).reason == .seatLimit)
            let first = try await checkout("first", queue: true)
            #expect(first.reason == .valid)
            #expect(try await checkout("second", queue: true).queuePosition == 1)
            await #expect(throws: RPCError.self) {
                _ = try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: holder.lease!.leaseId))
            }
            _ = try await validation.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: first.lease!.leaseId))
            #expect(try await checkout("second", queue: true).reason == .valid)
        }
    }

    @Test func offlineFilesRoundTripAndCatchTamperingAndClockRollback() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance, duration: 365 * 86400)
            let key = try await issue(issuance, policy, customer).licenseKey
            let keys = Dictionary(uniqueKeysWithValues: try await issuance.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys.map { ($0.kid, $0.publicKey) })
            let now = SystemLicenseClock().now
            let parsedKey = try LicenseKey(parsing: key)

            let plain = try await validation.call(ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(licenseKey: key, fingerprint: "airgap-1", validSeconds: 86400))
            #expect(plain.armored.hasPrefix("-----BEGIN LICENSE CERTIFICATE-----"))
            let (payload, seen) = try OfflineLicenseFile.verify(plain.armored, licenseKey: nil, publicKeys: keys, fingerprint: "airgap-1", now: now, lastSeen: 0)
            #expect(payload.notAfter == plain.notAfter)
            #expect(seen == now)
            #expect(throws: OfflineFileError.certificate(.fingerprintMismatch)) {
                try OfflineLicenseFile.verify(plain.armored, licenseKey: nil, publicKeys: keys, fingerprint: "other", now: now, lastSeen: 0)
            }
            #expect(throws: OfflineFileError.clockRolledBack(now: now - 86400, lastSeen: now)) {
                try OfflineLicenseFile.verify(plain.armored, licenseKey: nil, publicKeys: keys, fingerprint: "airgap-1", now: now - 86400, lastSeen: now)
            }
            #expect(throws: OfflineFileError.self) {
                try OfflineLicenseFile.verify(plain.armored, licenseKey: nil, publicKeys: keys, fingerprint: "airgap-1", now: now + 2 * 86400, lastSeen: now)
            }
            var bytes = try #require(Armor.decode(LicenseCertificates.label, plain.armored))
            bytes[bytes.count / 3] ^= 0x20
            #expect(throws: OfflineFileError.self) {
                try OfflineLicenseFile.verify(Armor.encode(LicenseCertificates.label, bytes), licenseKey: nil, publicKeys: keys, fingerprint: "airgap-1", now: now, lastSeen: 0)
            }

            let sealed = try await validation.call(
                ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(licenseKey: key, fingerprint: "airgap-1", encrypt: true))
            #expect(sealed.armored.hasPrefix("-----BEGIN ENCRYPTED LICENSE FILE-----"))
            #expect(!sealed.armored.contains("LICENSE CERTIFICATE"))
            _ = try OfflineLicenseFile.verify(sealed.armored, licenseKey: parsedKey, publicKeys: keys, fingerprint: "airgap-1", now: now, lastSeen: now)
            #expect(throws: OfflineFileError.keyRequired) {
                try OfflineLicenseFile.verify(sealed.armored, licenseKey: nil, publicKeys: keys, fingerprint: "airgap-1", now: now, lastSeen: 0)
            }
            #expect(throws: OfflineFileError.wrongKeyOrAltered) {
                try OfflineLicenseFile.verify(sealed.armored, licenseKey: LicenseKey.generate(), publicKeys: keys, fingerprint: "airgap-1", now: now, lastSeen: 0)
            }
        }
    }

    @Test func regionsAreEnforcedFromTheStatedRegionOrTheIPAddress() async throws {
        var options = ValidationService.Options()
        options.geo = try GeoTable(parsing: """
            # test table
            81.2.69.0/24,GB
            175.16.199.0/24,CN
            2001:db8::/32,DE
            """)
        try await withIssuanceAndValidation(options: options) { issuance, validation in
            let (allowed, customer) = try await seedCatalogue(issuance, allowedRegions: ["GB", "DE"])
            let (denied, _) = try await seedCatalogue(issuance, deniedRegions: ["CN"])
            let europe = try await issue(issuance, allowed, customer).licenseKey
            let world = try await issue(issuance, denied, customer).licenseKey
            #expect(try await validate(validation, europe, region: "gb").reason == .valid)
            #expect(try await validate(validation, europe, region: "US").reason == .regionNotAllowed)
            #expect(try await validate(validation, europe, ip: "81.2.69.160").reason == .valid)
            #expect(try await validate(validation, europe, ip: "2001:db8::1").reason == .valid)
            #expect(try await validate(validation, europe, ip: "175.16.199.4").reason == .regionNotAllowed)
            #expect(try await validate(validation, europe, ip: "10.0.0.1").reason == .regionNotAllowed)
            #expect(try await validate(validation, world, ip: "175.16.199.4").reason == .regionNotAllowed)
            #expect(try await validate(validation, world, ip: "81.2.69.1").reason == .valid)
            #expect(try await validate(validation, world).reason == .valid)
            #expect(try await activate(validation, europe, "m1", region: "US").reason == .regionNotAllowed)
        }
    }

    @Test func signedAnswersRejectReplaysAndForgeries() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance)
            let key = try await issue(issuance, policy, customer).licenseKey
            let keys = Dictionary(uniqueKeysWithValues: try await issuance.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest()).keys.map { ($0.kid, $0.publicKey) })
            let now = SystemLicenseClock().now
            let nonce: [UInt8] = Array("request-1".utf8)
            let answer = try await validate(validation, key, nonce: nonce)
            let statement = try ValidationAnswer.verify(answer, nonce: nonce, publicKeys: keys, now: now)
            #expect(statement.reason == .valid)
            // The same answer replayed to a request with another nonce is detected.
            #expect(throws: ValidationAnswerError.nonceMismatch) {
                try ValidationAnswer.verify(answer, nonce: Array("request-2".utf8), publicKeys: keys, now: now)
            }
            var forged = answer
            forged.reason = .valid
            forged.statement[forged.statement.count - 1] ^= 1
            #expect(throws: ValidationAnswerError.badSignature) { try ValidationAnswer.verify(forged, nonce: nonce, publicKeys: keys, now: now) }
            var relabelled = try await validate(validation, LicenseKey.generate().description, nonce: nonce)
            #expect(relabelled.reason == .notFound)
            relabelled.reason = .valid
            #expect(throws: ValidationAnswerError.fieldsAltered) { try ValidationAnswer.verify(relabelled, nonce: nonce, publicKeys: keys, now: now) }
            #expect(throws: ValidationAnswerError.stale(statement.serverTime)) {
                try ValidationAnswer.verify(answer, nonce: nonce, publicKeys: keys, now: statement.serverTime + 3600)
            }
            let unsigned = try await validate(validation, key)
            #expect(throws: ValidationAnswerError.unsigned) { try ValidationAnswer.verify(unsigned, nonce: [], publicKeys: keys, now: now) }
        }
    }
}

/// A change that grants rights is visible to the next validation, whoever makes it: the
/// writer calls issuance, the product validates on another connection, with no wait.
@Suite struct ReadYourWritesTests {
    func validate(_ client: RPCClient, _ key: String, feature: String = "", user: String = "") async throws -> ValidateResponse {
        try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, feature: feature, user: user))
    }

    @Test func grantsAreSeenByTheNextValidation() async throws {
        let clock = ManualLicenseClock(SystemLicenseClock().now)
        try await withIssuanceAndValidation(clock: clock) { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance, type: .perUser, maxUsers: 2)
            for round in 0..<5 {
                // Assign, then validate as the new user.
                let issued = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
                let license = issued.license!.id
                #expect(try await validate(validation, issued.licenseKey, user: "ann-\(round)").valid == false)
                let assigned = try await issuance.call(IssuanceMethods.assignUser, AssignUserRequest(id: license, user: "ann-\(round)"))
                // The answer says where in the feed the change is, for callers that wait on it.
                #expect(assigned.feedSeq > issued.license!.feedSeq)
                #expect(try await validate(validation, issued.licenseKey, user: "ann-\(round)").reason == .valid, "assign, round \(round)")

                // Change entitlements, then use the new feature.
                #expect(try await validate(validation, issued.licenseKey, feature: "fly-\(round)", user: "ann-\(round)").reason == .featureNotEntitled)
                _ = try await issuance.call(IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: license, features: ["fly-\(round)"]))
                #expect(try await validate(validation, issued.licenseKey, feature: "fly-\(round)", user: "ann-\(round)").reason == .valid, "entitlements, round \(round)")

                // Suspend (may take a feed interval to be seen), then reinstate (may not).
                _ = try await issuance.call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: license, reason: "audit"))
                #expect(try await eventually { try await validate(validation, issued.licenseKey, user: "ann-\(round)").reason == .suspended })
                _ = try await issuance.call(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: license))
                #expect(try await validate(validation, issued.licenseKey, user: "ann-\(round)").reason == .valid, "reinstate, round \(round)")

                // Expire (the clock moves past expiry and grace), then renew.
                let expired = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(
                    policyId: policy, customerId: customer, overrides: LicenseOverrides(expiresAt: clock.now + 10)))
                _ = try await issuance.call(IssuanceMethods.assignUser, AssignUserRequest(id: expired.license!.id, user: "bo"))
                clock.advance(by: 3600)
                #expect(try await validate(validation, expired.licenseKey, user: "bo").reason == .expired)
                _ = try await issuance.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: expired.license!.id, extendTo: clock.now + 86_400))
                #expect(try await validate(validation, expired.licenseKey, user: "bo").reason == .valid, "renew, round \(round)")
            }
        }
    }
}

/// Operations a client retries after a lost answer, and seats of a license that lost its rights.
@Suite struct SeatAndMachineLifecycleTests {
    @Test func deactivateAndCheckinAreSafeToRepeat() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance, type: .enterprise, maxMachines: 2, maxSeats: 2)
            let key = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
            _ = try await validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "m1"))
            #expect(try await validation.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "m1")).deactivated)
            #expect(try await validation.call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "m1")).deactivated == false)

            let lease = try #require(try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "c1")).lease)
            #expect(try await validation.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease.leaseId)).reason == .valid)
            #expect(try await validation.call(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease.leaseId)).reason == .valid)
        }
    }

    @Test func aRevokedLicenseLosesItsSeatsAndItsQueue() async throws {
        try await withIssuanceAndValidation { issuance, validation in
            let (policy, customer) = try await seedCatalogue(issuance, type: .enterprise, maxSeats: 1)
            let issued = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let held = try #require(try await validation.call(
                ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: issued.licenseKey, clientId: "holder", ttlSeconds: 600)).lease)
            #expect(try await validation.call(
                ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: issued.licenseKey, clientId: "waiting", queue: true)).queuePosition == 1)
            #expect(try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: held.leaseId)).reason == .valid)

            _ = try await issuance.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: issued.license!.id, reason: "chargeback"))
            // The revocation arrives by the feed; the next heartbeat after it ends the lease.
            #expect(try await eventually {
                try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: held.leaseId)).reason == .revoked
            })
            #expect(try await validation.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: issued.license!.id)).leases.isEmpty)
            await #expect(throws: RPCError.self) {
                _ = try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: held.leaseId))
            }
            // The queued client is not served a seat of a revoked license.
            #expect(try await validation.call(
                ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: issued.licenseKey, clientId: "waiting", queue: true)).reason == .revoked)
        }
    }
}
