import LicensingCore
import LicensingWire
import Testing

@Suite struct LicenseDecisionTests {
    let now: Int64 = 1_800_000_000

    func facts(_ state: LicenseState = .active, expiresAt: Int64 = 0, grace: Int64 = 0) -> LicenseFacts {
        LicenseFacts(licenseID: "lic_1", state: state, startsAt: now - 100, expiresAt: expiresAt, graceSeconds: grace,
                     features: ["export"], allowedRegions: [], deniedRegions: ["KP"])
    }

    @Test func reasonCodes() {
        let query = ValidationQuery()
        #expect(LicenseDecider.decide(nil, query, now: now).reason == .notFound)
        #expect(LicenseDecider.decide(facts(), query, now: now).reason == .valid)
        #expect(LicenseDecider.decide(facts(.revoked), query, now: now).reason == .revoked)
        #expect(LicenseDecider.decide(facts(.suspended), query, now: now).reason == .suspended)
        #expect(LicenseDecider.decide(facts(expiresAt: now - 10), query, now: now).reason == .expired)
        #expect(LicenseDecider.decide(facts(expiresAt: now - 10, grace: 100), query, now: now).reason == .inGrace)
        #expect(LicenseDecider.decide(facts(expiresAt: now + 10), query, now: now).reason == .valid)
        #expect(LicenseDecider.decide(facts(), ValidationQuery(feature: "render"), now: now).reason == .featureNotEntitled)
        #expect(LicenseDecider.decide(facts(), ValidationQuery(feature: "export"), now: now).reason == .valid)
        #expect(LicenseDecider.decide(facts(), ValidationQuery(region: "kp"), now: now).reason == .regionNotAllowed)
    }

    @Test func revokedWinsOverEverythingElse() {
        let decision = LicenseDecider.decide(facts(.revoked, expiresAt: now - 10), ValidationQuery(feature: "nope"), now: now)
        #expect(decision.reason == .revoked)
        #expect(!decision.allows)
    }

    @Test func graceAllowsButSaysSo() {
        let decision = LicenseDecider.decide(facts(expiresAt: now - 10, grace: 100), ValidationQuery(), now: now)
        #expect(decision.allows)
        #expect(decision.state == .inGrace)
    }

    @Test func allowListNeedsAKnownRegion() {
        var limited = facts()
        limited.allowedRegions = ["DE", "FR"]
        #expect(LicenseDecider.decide(limited, ValidationQuery(region: "DE"), now: now).reason == .valid)
        #expect(LicenseDecider.decide(limited, ValidationQuery(region: "US"), now: now).reason == .regionNotAllowed)
        #expect(LicenseDecider.decide(limited, ValidationQuery(), now: now).reason == .regionNotAllowed)
    }

    @Test func nodeLockedLicensesNeedAnActivatedMachine() {
        var locked = facts()
        locked.licenseType = .perDevice
        #expect(LicenseDecider.decide(locked, ValidationQuery(), now: now).reason == .notActivated)
        #expect(LicenseDecider.decide(locked, ValidationQuery(machine: .notActivated(licenseHasMachines: false)), now: now).reason == .notActivated)
        #expect(LicenseDecider.decide(locked, ValidationQuery(machine: .notActivated(licenseHasMachines: true)), now: now).reason == .fingerprintMismatch)
        #expect(LicenseDecider.decide(locked, ValidationQuery(machine: .activated), now: now).reason == .valid)
        // Revocation is still reported as such, not as a machine problem.
        locked.state = .revoked
        #expect(LicenseDecider.decide(locked, ValidationQuery(), now: now).reason == .revoked)
    }

    @Test func perUserLicensesNeedANamedUser() {
        var named = facts()
        named.licenseType = .perUser
        named.maxUsers = 2
        named.namedUsers = ["ann"]
        #expect(LicenseDecider.decide(named, ValidationQuery(user: "ann"), now: now).reason == .valid)
        #expect(LicenseDecider.decide(named, ValidationQuery(user: "bob"), now: now).reason == .notActivated)
        #expect(LicenseDecider.decide(named, ValidationQuery(), now: now).reason == .notActivated)
        named.namedUsers = ["ann", "cy"]
        #expect(LicenseDecider.decide(named, ValidationQuery(user: "bob"), now: now).reason == .userLimit)
    }

    @Test func overageRaisesLimits() {
        var limited = facts()
        limited.overagePermille = 1500
        #expect(limited.allowance(2) == 3)
        #expect(limited.allowance(0) == nil)
        limited.overagePermille = 1000
        #expect(limited.allowance(5) == 5)
    }

    @Test func everyReasonCodeHasATestedDecisionOrAHome() {
        // Decisions made here; the rest come from stores (limits, quotas) or verifiers.
        let decided: Set<ReasonCode> = [.valid, .inGrace, .expired, .suspended, .revoked, .notFound, .notActivated,
                                        .userLimit, .featureNotEntitled, .regionNotAllowed, .fingerprintMismatch]
        let elsewhere: Set<ReasonCode> = [.machineLimit, .seatLimit, .quotaExceeded, .badSignature, .malformedKey, .unspecified]
        #expect(decided.union(elsewhere) == Set(ReasonCode.allKnown))
    }
}
