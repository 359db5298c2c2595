import LicensingWire

/// The facts about a license that deciding a validation needs; validation keeps them in
/// its replica.
public struct LicenseFacts: Sendable, Equatable {
    public var licenseID: String
    public var state: LicenseState
    public var startsAt: Int64
    /// 0 = perpetual.
    public var expiresAt: Int64
    public var graceSeconds: Int64
    public var features: [String]
    public var allowedRegions: [String]
    public var deniedRegions: [String]

    public init(
        licenseID: String, state: LicenseState, startsAt: Int64 = 0, expiresAt: Int64 = 0, graceSeconds: Int64 = 0,
        features: [String] = [], allowedRegions: [String] = [], deniedRegions: [String] = []
    ) {
        self.licenseID = licenseID
        self.state = state
        self.startsAt = startsAt
        self.expiresAt = expiresAt
        self.graceSeconds = graceSeconds
        self.features = features
        self.allowedRegions = allowedRegions
        self.deniedRegions = deniedRegions
    }

    /// End of grace; 0 = perpetual.
    public var graceEndsAt: Int64 { expiresAt == 0 ? 0 : expiresAt + graceSeconds }

    /// The state at `now`: time-driven transitions (active → in grace → expired) are
    /// applied here, so a decision never waits for the scheduler that publishes them.
    public func effectiveState(at now: Int64) -> LicenseState {
        switch state {
        // Expired is stored only when time or a cancellation ended the license; only a
        // renewal (which stores active again) brings it back.
        case .revoked, .suspended, .expired: return state
        default:
            if expiresAt != 0, now >= expiresAt {
                return now >= graceEndsAt ? .expired : .inGrace
            }
            return state == .inGrace ? .active : state
        }
    }
}

public struct ValidationQuery: Sendable {
    public var feature: String
    /// ISO 3166-1 alpha-2, upper case; empty = unknown.
    public var region: String

    public init(feature: String = "", region: String = "") {
        self.feature = feature
        self.region = region.uppercased()
    }
}

public struct LicenseDecision: Sendable, Equatable {
    public var reason: ReasonCode
    public var state: LicenseState
    public var detail: String

    /// A decision lets the product run when it is VALID or IN_GRACE.
    public var allows: Bool { reason == .valid || reason == .inGrace }
}

/// Decides a validation from the license facts alone, with no I/O.
public enum LicenseDecider {
    public static func decide(_ facts: LicenseFacts?, _ query: ValidationQuery, now: Int64) -> LicenseDecision {
        guard let facts else {
            return LicenseDecision(reason: .notFound, state: .unspecified, detail: "no license has this key")
        }
        let state = facts.effectiveState(at: now)
        switch state {
        case .revoked:
            return LicenseDecision(reason: .revoked, state: state, detail: "the license was revoked")
        case .suspended:
            return LicenseDecision(reason: .suspended, state: state, detail: "the license is suspended")
        case .expired:
            return LicenseDecision(reason: .expired, state: state, detail: "the license expired at \(facts.expiresAt) and its grace period has ended")
        default:
            break
        }
        if facts.startsAt != 0, now < facts.startsAt {
            return LicenseDecision(reason: .expired, state: state, detail: "the license starts at \(facts.startsAt)")
        }
        if !query.region.isEmpty {
            if facts.deniedRegions.contains(query.region)
                || (!facts.allowedRegions.isEmpty && !facts.allowedRegions.contains(query.region))
            {
                return LicenseDecision(reason: .regionNotAllowed, state: state, detail: "the license may not be used in \(query.region)")
            }
        } else if !facts.allowedRegions.isEmpty {
            return LicenseDecision(reason: .regionNotAllowed, state: state, detail: "the license is limited to regions \(facts.allowedRegions.joined(separator: ",")) and the caller's region is unknown")
        }
        if !query.feature.isEmpty, !facts.features.contains(query.feature) {
            return LicenseDecision(reason: .featureNotEntitled, state: state, detail: "the license does not include feature \(query.feature)")
        }
        if state == .inGrace {
            return LicenseDecision(reason: .inGrace, state: state, detail: "the license expired at \(facts.expiresAt); grace ends at \(facts.graceEndsAt)")
        }
        return LicenseDecision(reason: .valid, state: state, detail: "")
    }
}
