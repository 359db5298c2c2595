import Foundation
import LicensingCore
import LicensingWire

/// What the console says instead of codes.
enum Words {
    static func state(_ state: LicenseState) -> String {
        switch state {
        case .active: "Active"
        case .inGrace: "In grace period"
        case .expired: "Expired"
        case .suspended: "Suspended"
        case .revoked: "Revoked"
        default: "Unknown"
        }
    }

    /// The state in a sentence, with its dates.
    static func stateSentence(_ license: License, now: Int64) -> String {
        let graceEnds = license.expiresAt == 0 ? 0 : license.expiresAt + license.graceSeconds
        switch license.state {
        case .active:
            return license.expiresAt == 0 ? "Active, with no end date." : "Active until \(day(license.expiresAt)) (\(daysLeft(license.expiresAt, now: now)))."
        case .inGrace:
            return "Expired on \(day(license.expiresAt)); it keeps working in its grace period until \(day(graceEnds)) while you renew."
        case .expired:
            return "Expired on \(day(license.expiresAt))\(license.graceSeconds > 0 ? "; its grace period ended on \(day(graceEnds))" : "")."
        case .suspended:
            return "Suspended\(license.stateReason.isEmpty ? "" : ": \(license.stateReason)"). It does not work until the vendor reinstates it."
        case .revoked:
            return "Revoked\(license.stateReason.isEmpty ? "" : ": \(license.stateReason)"). It no longer works."
        default:
            return "State unknown."
        }
    }

    static func daysLeft(_ at: Int64, now: Int64) -> String {
        let days = (at - now + 86399) / 86400
        return days <= 0 ? "ends today" : days == 1 ? "1 day left" : "\(days) days left"
    }

    static func reason(_ reason: ReasonCode) -> String {
        switch reason {
        case .valid: "valid"
        case .inGrace: "in its grace period"
        case .expired: "the license has expired"
        case .suspended: "the license is suspended"
        case .revoked: "the license is revoked"
        case .notFound: "no license has this key"
        case .notActivated: "this machine is not activated for this license"
        case .machineLimit: "every machine slot of the license is in use"
        case .userLimit: "every named-user slot is in use"
        case .seatLimit: "every seat is in use"
        case .featureNotEntitled: "the license does not include this feature"
        case .regionNotAllowed: "the license may not be used in this country"
        case .quotaExceeded: "the usage quota is used up"
        case .fingerprintMismatch: "this machine is not activated for this license"
        case .badSignature: "the answer's signature did not verify"
        case .malformedKey: "the key is not well formed"
        default: "unknown"
        }
    }

    static func rule(_ rule: String) -> String {
        switch rule {
        case "seat-overuse": "More seats in use than the license allows"
        case "machine-churn": "Machines activated and deactivated unusually often"
        case "fingerprint-sharing": "One key used from many machines"
        case "country-sharing": "One key used from many countries"
        case "denied-region": "Used from a country the license does not allow"
        case "use-after-end": "Used after the license ended"
        case "quota-exceeded": "Usage quota exceeded"
        case "clock-tamper": "The machine's clock was turned back"
        default: rule
        }
    }

    static func licenseType(_ type: LicenseType) -> String {
        switch type {
        case .perUser: "Per user"
        case .perDevice: "Per device"
        case .subscription: "Subscription"
        case .enterprise: "Enterprise"
        default: "—"
        }
    }

    static func subscriptionStatus(_ status: SubscriptionStatus) -> String {
        switch status {
        case .active: "Paid and active"
        case .pastDue: "Payment failed: past due"
        case .canceled: "Canceled"
        default: "—"
        }
    }

    /// ISO day (UTC), the form dates have before the browser shows them in its own locale.
    static func day(_ seconds: Int64) -> String { seconds == 0 ? "—" : ISODate.day(seconds) }

    static func money(_ minor: Int64, _ currency: String) -> String {
        let sign = minor < 0 ? "-" : ""
        let value = abs(minor)
        return "\(sign)\(value / 100).\(String(format: "%02d", Int(value % 100))) \(currency)"
    }
}

/// A date for a template: ISO text the page shows as is without JavaScript, and the
/// machine-readable instant the console's script turns into the viewer's locale.
struct DateView {
    let iso: String
    let text: String

    init(_ seconds: Int64, withTime: Bool = false) {
        iso = seconds == 0 ? "" : ISODate.format(seconds)
        text = seconds == 0 ? "—" : withTime ? ISODate.format(seconds) : ISODate.day(seconds)
    }

    var values: [String: Any] { ["iso": iso, "text": text, "has": !iso.isEmpty] }
}
