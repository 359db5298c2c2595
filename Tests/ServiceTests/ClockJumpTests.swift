import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing
import ValidationService

/// The wall clock stepped by hours (an operator, a bad NTP source, a restored VM) while seats
/// are held: seats never exceed the limit, a dead client's seat comes back within one time
/// to live whatever the clock did, and a live client is not dropped by a step forward.
@Suite struct ClockJumpTests {
    /// A one-seat license issued a day before the clock's now (so steps back by hours stay
    /// inside its term).
    private func seatLicense(_ issuance: RPCClient, _ clock: ManualLicenseClock) async throws -> String {
        clock.advance(by: -86400)
        defer { clock.advance(by: 86400) }
        let (policy, customer) = try await seedCatalogue(issuance, type: .enterprise, maxSeats: 1, overage: 1000)
        return try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
    }

    @Test func aClockSetBackDoesNotKeepADeadClientsSeatForHours() async throws {
        let clock = ManualLicenseClock()
        try await withIssuanceAndValidation(clock: clock) { issuance, validation in
            let key = try await seatLicense(issuance, clock)
            let held = try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "dies", ttlSeconds: 60))
            #expect(held.reason == .valid)
            // The clock goes back three hours; the holder never heartbeats again.
            clock.advance(by: -3 * 3600)
            let refused = try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "next"))
            #expect(refused.reason == .seatLimit)
            #expect(refused.seatsInUse == 1)
            // One time to live later (not three hours and a minute) the seat is free again.
            clock.advance(by: 61)
            let taken = try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "next"))
            #expect(taken.reason == .valid)
            #expect(taken.seatsInUse == 1)
            // The lease handed out ends one TTL after the (new) now: no negative durations.
            let lease = try #require(taken.lease)
            #expect(lease.expiresAt > lease.acquiredAt)
            #expect(lease.acquiredAt == clock.now)
        }
    }

    @Test func aClockSetForwardDoesNotDropALiveClientsSeat() async throws {
        let clock = ManualLicenseClock()
        try await withIssuanceAndValidation(clock: clock) { issuance, validation in
            let key = try await seatLicense(issuance, clock)
            let held = try #require(try await validation.call(
                ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "alive", ttlSeconds: 60)).lease)
            // Five hours forward in one step: the lease looks long over by the wall clock, but
            // its holder heartbeats and nobody else asked for the seat meanwhile.
            clock.advance(by: 5 * 3600)
            let renewed = try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: held.leaseId))
            #expect(renewed.reason == .valid)
            #expect(renewed.lease?.expiresAt == clock.now + 60)
            #expect(try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "other")).reason == .seatLimit)
            // Back again by the same five hours: still one seat held, by the same client.
            clock.advance(by: -5 * 3600)
            #expect(try await validation.call(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: held.leaseId)).reason == .valid)
            let seats = try await validation.call(ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "other"))
            #expect(seats.reason == .seatLimit)
            #expect(seats.seatsInUse == 1)
        }
    }

    /// With the seat contended, the steps both ways never give out more seats than the limit.
    @Test func stepsBothWaysNeverOverGrantSeats() async throws {
        let clock = ManualLicenseClock()
        try await withIssuanceAndValidation(clock: clock) { issuance, validation in
            let key = try await seatLicense(issuance, clock)
            var rng = SplitMix64(seed: 42)
            for step in 0..<40 {
                let jump = Int64(rng.next() % 7) - 3
                clock.advance(by: jump * 3600 + Int64(rng.next() % 90))
                let answer = try await validation.call(
                    ValidationMethods.checkoutSeat, CheckoutSeatRequest(licenseKey: key, clientId: "c\(step % 5)", ttlSeconds: 60))
                #expect(answer.seatsInUse <= 1, "step \(step): \(answer.seatsInUse) seats in use of 1")
            }
        }
    }

    /// The activation limit (a token bucket per license) is not drained by a step back: the
    /// activations it still allows are allowed at once, not hours later.
    @Test func aClockSetBackDoesNotBlockActivations() async throws {
        let clock = ManualLicenseClock()
        var options = ValidationService.Options()
        options.activationsPerHour = 5
        try await withIssuanceAndValidation(clock: clock, options: options) { issuance, validation in
            clock.advance(by: -86400)
            let (policy, customer) = try await seedCatalogue(issuance, type: .perDevice, maxMachines: 100)
            let key = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
            clock.advance(by: 86400)
            for machine in 0..<2 {
                #expect(try await validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "m\(machine)")).reason == .valid)
            }
            clock.advance(by: -3 * 3600)
            #expect(try await validation.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "m2")).reason == .valid)
        }
    }
}
