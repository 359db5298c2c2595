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
    public var licenseType: LicenseType
    public var maxMachines: UInt32
    public var maxUsers: UInt32
    public var maxSeats: UInt32
    /// 1000 = no overage, 1250 = 1.25x the limits.
    public var overagePermille: UInt32
    public var namedUsers: [String]
    public var departmentID: String
    public var tenantID: String

    public init(
        licenseID: String, state: LicenseState, startsAt: Int64 = 0, expiresAt: Int64 = 0, graceSeconds: Int64 = 0,
        features: [String] = [], allowedRegions: [String] = [], deniedRegions: [String] = [],
        licenseType: LicenseType = .unspecified, maxMachines: UInt32 = 0, maxUsers: UInt32 = 0, maxSeats: UInt32 = 0,
        overagePermille: UInt32 = 1000, namedUsers: [String] = [], departmentID: String = "", tenantID: String = ""
    ) {
        self.licenseID = licenseID
        self.state = state
        self.startsAt = startsAt
        self.expiresAt = expiresAt
        self.graceSeconds = graceSeconds
        self.features = features
        self.allowedRegions = allowedRegions
        self.deniedRegions = deniedRegions
        self.licenseType = licenseType
        self.maxMachines = maxMachines
        self.maxUsers = maxUsers
        self.maxSeats = maxSeats
        self.overagePermille = overagePermille
        self.namedUsers = namedUsers
        self.departmentID = departmentID
        self.tenantID = tenantID
    }

    /// A limit with the overage allowance applied; nil = unlimited (a limit of 0).
    public func allowance(_ limit: UInt32) -> Int? {
        guard limit > 0 else { return nil }
        return Int(limit) * Int(min(max(overagePermille, 1000), 1_000_000)) / 1000
    }

    /// Node-locked: a machine must be activated before the license is valid on it.
    public var isNodeLocked: Bool { licenseType == .perDevice }

    /// Per-user: the caller must be one of the named users.
    public var needsNamedUser: Bool { licenseType == .perUser }

    /// End of grace; 0 = perpetual.
    public var graceEndsAt: Int64 { expiresAt == 0 ? 0 : expiresAt.saturatingAdd(graceSeconds) }

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
    public var user: String
    /// The user as the license's named users are written: the user itself, or its
    /// pseudonym where the facts hold pseudonyms (``KeyHashSecret/namedUserPseudonym(license:user:)``).
    public var userKey: String
    /// What the store knows of the caller's machine, for node-locked licenses.
    public var machine: MachineStanding

    public init(feature: String = "", region: String = "", user: String = "", userKey: String? = nil, machine: MachineStanding = .unknown) {
        self.feature = feature
        self.region = region.uppercased()
        self.user = user
        self.userKey = userKey ?? user
        self.machine = machine
    }
}

public enum MachineStanding: Sendable, Equatable {
    /// No fingerprint was given.
    case unknown
    /// The fingerprint is one of the license's activated machines.
    case activated
    /// The fingerprint is not activated; `licenseHasMachines` tells whether others are.
    case notActivated(licenseHasMachines: Bool)
}

public struct LicenseDecision: Sendable, Equatable {
    public var reason: ReasonCode
    public var state: LicenseState
    public var detail: String

    public init(reason: ReasonCode, state: LicenseState, detail: String) {
        self.reason = reason
        self.state = state
        self.detail = detail
    }

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
        if facts.isNodeLocked {
            switch query.machine {
            case .activated:
                break
            case .unknown:
                return LicenseDecision(reason: .notActivated, state: state, detail: "the license is node-locked: send the machine fingerprint")
            case .notActivated(let others) where others:
                return LicenseDecision(reason: .fingerprintMismatch, state: state, detail: "this machine is not one the license is activated on")
            case .notActivated:
                return LicenseDecision(reason: .notActivated, state: state, detail: "activate this machine first")
            }
        }
        if facts.needsNamedUser {
            if query.user.isEmpty || !facts.namedUsers.contains(query.userKey) {
                if let limit = facts.allowance(facts.maxUsers), facts.namedUsers.count >= limit, !query.user.isEmpty {
                    return LicenseDecision(reason: .userLimit, state: state, detail: "the license's \(facts.maxUsers) named users do not include \(query.user)")
                }
                return LicenseDecision(reason: .notActivated, state: state, detail: query.user.isEmpty ? "the license is per-user: send the user" : "\(query.user) is not a named user of the license")
            }
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
