import Foundation
import Hummingbird
import LicensingCore
import LicensingRPC
import LicensingWire

// The license holders' portal: their licenses in words, and the two things they change
// themselves (freeing a machine, an offline file for one). The gateway checks the scope
// of the holder token on every call; the console only passes it on.

extension ConsoleService {
    func addHolderPages(to router: Router<ConsoleContext>) {
        router.get("/my") { [self] request, context in
            guard let session = session(request), case .holder(let holder) = session.subject else { return Self.redirect("/sign-in") }
            let notice = sessions.takeNotice(session.id)
            do {
                let answer = try await gateway.call(GatewayMethods.holderLicenses, HolderLicensesRequest(), credential: holder.token, address: context.address)
                let values: [String: Any] = [
                    "licenses": answer.licenses.map { holderView($0, csrf: session.csrf) },
                    "parts": answer.parts.map(Self.partSentence),
                ]
                return Self.html(Self.render("holder", values, title: "Your licenses", session: session, current: "/my", notice: notice))
            } catch let error as RPCError {
                if error.code == .unauthenticated { return Self.redirect("/sign-in") }
                return Self.html(Self.render("holder", ["licenses": [] as [Any]], title: "Your licenses", session: session, current: "/my", error: error.sentence), status: Self.status(error))
            }
        }
        router.post("/my/deactivate") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request), case .holder(let holder) = session.subject else { return Self.forbidden() }
            do {
                let answer = try await gateway.call(
                    GatewayMethods.holderDeactivate, HolderDeactivateRequest(licenseId: form["license_id"] ?? "", machineId: form["machine_id"] ?? ""),
                    credential: holder.token, address: context.address)
                sessions.setNotice(session.id, answer.deactivated ? "The machine is deactivated; its slot is free." : "That machine was not activated.")
            } catch let error as RPCError {
                sessions.setNotice(session.id, "The machine could not be deactivated: \(error.sentence)")
            }
            return Self.redirect("/my")
        }
        router.post("/my/offline") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request), case .holder(let holder) = session.subject else { return Self.forbidden() }
            let license = form["license_id"] ?? ""
            do {
                let file = try await gateway.call(
                    GatewayMethods.holderOfflineLicense, HolderOfflineLicenseRequest(licenseId: license, fingerprint: form["fingerprint"] ?? ""),
                    credential: holder.token, address: context.address)
                let name = "license-\(license.filter { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }).lic"
                return Response(
                    status: .ok,
                    headers: [.contentType: "application/octet-stream", .contentDisposition: "attachment; filename=\"\(name)\""],
                    body: ResponseBody(byteBuffer: ByteBuffer(string: file.armored)))
            } catch let error as RPCError {
                sessions.setNotice(session.id, "No offline file was made: \(error.sentence)")
                return Self.redirect("/my")
            }
        }
    }

    static func partSentence(_ part: PartStatus) -> String {
        let what = switch part.service {
        case "usage": "Usage and quotas"
        case "validation": "Machines and seats"
        case "integrations": "Renewal options"
        case "issuance": "Plan and product details"
        default: "Part of this page"
        }
        return "\(what) cannot be shown right now (license-\(part.service) is not answering); the rest of the page is up to date."
    }

    func holderView(_ view: HolderLicense, csrf: String) -> [String: Any] {
        let license = view.license ?? License()
        let now = clock.now
        let renewal = view.renewal
        var renewalSentence: String
        if license.expiresAt == 0 {
            renewalSentence = "This license does not expire."
        } else {
            let grace = license.graceSeconds > 0
                ? " After that it keeps working for a grace period until \(Words.day(license.expiresAt + license.graceSeconds)), then stops."
                : " After that it stops working."
            renewalSentence = license.expiresAt > now
                ? "It ends on \(Words.day(license.expiresAt)) (\(Words.daysLeft(license.expiresAt, now: now)))." + grace
                : "It ended on \(Words.day(license.expiresAt))." + (license.state == .inGrace ? " Renew before \(Words.day(license.expiresAt + license.graceSeconds)) to keep it working." : "")
            if let subscription = view.subscription, subscription.autoRenew, subscription.status == .active {
                renewalSentence += " It renews automatically when your subscription is paid."
            }
        }
        if renewal == nil { renewalSentence += " (Renewal options cannot be shown right now.)" }
        let renewalURL = (renewal?.renewalUrl ?? "").replacingOccurrences(of: "{license_id}", with: license.id)
        var values: [String: Any] = [
            "id": license.id, "product": view.product?.name ?? license.productId, "plan": view.policy?.name ?? "",
            "state": Words.state(license.state), "stateSentence": Words.stateSentence(license, now: now), "stateClass": Self.stateClass(license.state),
            "keyPrefix": license.keyPrefix, "type": Words.licenseType(license.licenseType),
            "issued": DateView(license.issuedAt).values, "expires": DateView(license.expiresAt).values,
            "included": license.features, "notIncluded": view.featuresNotIncluded, "hasFeatures": !license.features.isEmpty || !view.featuresNotIncluded.isEmpty,
            "hasQuotas": !view.quotas.isEmpty,
            "quotas": view.quotas.map { quota -> [String: Any] in
                ["feature": quota.feature, "used": quota.used, "limit": quota.limit, "exceeded": quota.exceeded,
                 "period": quota.period == "total" ? "in all" : quota.periodEndsAt > 0 ? "this \(quota.period), until \(Words.day(quota.periodEndsAt))" : "per \(quota.period)"]
            },
            "machineCount": view.machines.count, "maxMachines": license.maxMachines > 0 ? "\(license.maxMachines)" : "",
            "hasMachines": !view.machines.isEmpty,
            "machines": view.machines.map { machine -> [String: Any] in
                ["id": machine.id, "licenseID": license.id, "csrf": csrf,
                 "name": machine.name.isEmpty ? (machine.platform.isEmpty ? "Machine \(machine.fingerprintHash.prefix(8))" : "\(machine.platform) machine \(machine.fingerprintHash.prefix(8))") : machine.name,
                 "first": DateView(machine.firstSeen).values, "last": DateView(machine.lastSeen).values]
            },
            "seatCount": view.seats.count, "maxSeats": license.maxSeats > 0 ? "\(license.maxSeats)" : "", "hasSeats": !view.seats.isEmpty,
            "seats": view.seats.map { ["user": $0.user.isEmpty ? $0.clientId : $0.user, "since": DateView($0.acquiredAt, withTime: true).values] as [String: Any] },
            "renewalSentence": renewalSentence, "renewalURL": renewalURL,
        ]
        // Absent, not empty: a section over an empty string would still render.
        if let subscription = view.subscription {
            values["subscription"] = Words.subscriptionStatus(subscription.status) + (subscription.periodEnd > 0 ? ", paid until \(Words.day(subscription.periodEnd))" : "")
        }
        for key in ["renewalURL", "maxMachines", "maxSeats"] where (values[key] as? String)?.isEmpty == true { values[key] = nil }
        return values
    }

    static func stateClass(_ state: LicenseState) -> String {
        switch state {
        case .active: "active"
        case .inGrace: "grace"
        case .expired: "expired"
        case .suspended: "suspended"
        case .revoked: "revoked"
        default: "unknown"
        }
    }
}
