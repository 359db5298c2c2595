import Foundation
import Hummingbird
import LicensingCore
import LicensingRPC
import LicensingWire

// The license list and one license's page (timeline, machines, seats, usage, alerts, and
// the actions the operator's role may take).

extension ConsoleService {
    func licensesPage(_ request: Request, _ context: ConsoleContext, _ session: ConsoleSession, _ identity: OperatorIdentity) async -> Response {
        let query = request.uri.queryParameters
        let q = String((query.get("q") ?? "").trimmingCharacters(in: .whitespaces).prefix(100))
        let customer = String((query.get("customer") ?? "").prefix(100))
        let product = String((query.get("product") ?? "").prefix(100))
        let state = LicenseState(rawValue: Int32(query.get("state") ?? "0") ?? 0)
        let key = identity.apiKey
        async let products = gateway.part(IssuanceMethods.listProducts, ListProductsRequest(page: PageRequest(pageSize: 200)), credential: key, address: context.address)
        var parts: [String] = []
        var licenses: [License] = []
        if q.count > 20, (try? LicenseKey(parsing: q)) != nil {
            if case .success(let license) = await gateway.part(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: q), credential: key, address: context.address) { licenses = [license] }
        } else if q.hasPrefix("lic_") {
            if case .success(let license) = await gateway.part(IssuanceMethods.getLicense, GetLicenseRequest(id: q), credential: key, address: context.address) { licenses = [license] }
        } else {
            switch await gateway.part(
                IssuanceMethods.listLicenses, ListLicensesRequest(customerId: customer, productId: product, state: state, page: PageRequest(pageSize: 500)),
                credential: key, address: context.address)
            {
            case .success(let page): licenses = page.licenses.filter { q.isEmpty || $0.keyPrefix.uppercased().hasPrefix(q.uppercased()) }
            case .failure(let error): parts.append(error.sentence)
            }
        }
        let productList = (try? await products.get())?.products ?? []
        let names = Dictionary(productList.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        let states: [(LicenseState, String)] = [(.unspecified, "Any"), (.active, "Active"), (.inGrace, "In grace"), (.expired, "Expired"), (.suspended, "Suspended"), (.revoked, "Revoked")]
        let values: [String: Any] = [
            "q": q, "customer": customer, "parts": parts,
            "products": productList.map { ["id": $0.id, "name": $0.name, "selected": $0.id == product] as [String: Any] },
            "states": states.map { ["value": $0.0.rawValue, "label": $0.1, "selected": $0.0 == state] as [String: Any] },
            "rows": licenses.prefix(200).map { license -> [String: Any] in
                ["id": license.id, "keyPrefix": license.keyPrefix, "product": names[license.productId] ?? license.productId, "customer": license.customerId,
                 "state": Words.state(license.state), "expires": DateView(license.expiresAt).values]
            },
        ]
        return Self.html(Self.render("licenses", values, title: "Licenses", session: session, current: "/licenses", notice: sessions.takeNotice(session.id)))
    }

    func licensePage(_ id: String, _ context: ConsoleContext, _ session: ConsoleSession, _ identity: OperatorIdentity) async -> Response {
        let key = identity.apiKey
        let address = context.address
        let overview: LicenseOverviewResponse
        do {
            overview = try await gateway.call(GatewayMethods.licenseOverview, GetByIdRequest(id: id), credential: key, address: address)
        } catch let error as RPCError {
            return Self.html(Self.render("message", ["heading": "License \(id)", "text": error.sentence, "back": "/licenses"], title: "License", session: session), status: Self.status(error))
        } catch {
            return Self.html(Self.render("message", ["heading": "License \(id)", "text": "\(error)", "back": "/licenses"], title: "License", session: session), status: .internalServerError)
        }
        guard let license = overview.license else {
            let text = overview.parts.first(where: { $0.service == "issuance" }).map(Self.partSentence) ?? "The license cannot be shown right now."
            return Self.html(Self.render("message", ["heading": "License \(id)", "text": text, "back": "/licenses"], title: "License", session: session), status: .serviceUnavailable)
        }
        async let policy = gateway.part(IssuanceMethods.getPolicy, GetByIdRequest(id: license.policyId), credential: key, address: address)
        async let product = gateway.part(IssuanceMethods.getProduct, GetByIdRequest(id: license.productId), credential: key, address: address)
        async let alerts = gateway.part(UsageMethods.listAlerts, ListAlertsRequest(licenseId: id, includeAcknowledged: true), credential: key, address: address)
        let mayAudit = identity.may(IssuanceMethods.listAuditEvents)
        async let audit = mayAudit
            ? gateway.part(IssuanceMethods.listAuditEvents, ListAuditEventsRequest(limit: 100, target: id), credential: key, address: address)
            : .failure(RPCError(.permissionDenied, ""))
        let (policyPart, productPart, alertsPart, auditPart) = await (policy, product, alerts, audit)
        var parts = overview.parts.filter { $0.code != .ok }.map(Self.partSentence)
        if case .failure(let error) = alertsPart, error.code != .permissionDenied { parts.append("Compliance alerts: \(error.sentence)") }
        let now = clock.now
        let actions = Self.licenseActions.filter { action in
            guard identity.may(action.method) else { return false }
            switch action.name {
            case "suspend": return license.state == .active || license.state == .inGrace
            case "reinstate": return license.state == .suspended
            case "revoke": return license.state != .revoked
            default: return license.state != .revoked && license.expiresAt != 0
            }
        }
        let mayDeactivate = identity.may(ValidationMethods.deactivate)
        var values: [String: Any] = [
            "id": license.id, "parts": parts, "state": Words.state(license.state), "stateSentence": Words.stateSentence(license, now: now),
            "stateClass": Self.stateClass(license.state), "product": (try? productPart.get())?.name ?? license.productId,
            "plan": (try? policyPart.get())?.name ?? license.policyId, "customer": license.customerId, "keyPrefix": license.keyPrefix,
            "type": Words.licenseType(license.licenseType), "features": license.features.joined(separator: ", "),
            "limits": "\(license.maxMachines == 0 ? "unlimited" : "\(license.maxMachines)") machines, \(license.maxSeats == 0 ? "no" : "\(license.maxSeats)") seats",
            "maxMachines": license.maxMachines, "maxSeats": license.maxSeats,
            "hasActions": !actions.isEmpty,
            "actions": actions.map { ["id": license.id, "name": $0.name, "label": $0.label, "danger": $0.danger] as [String: Any] },
            "mayChangeEntitlements": identity.may(IssuanceMethods.changeEntitlements) && license.state != .revoked,
            "mayDeactivate": mayDeactivate, "hasMachines": !overview.machines.isEmpty,
            "machines": overview.machines.map { machine -> [String: Any] in
                ["id": machine.id, "licenseID": license.id, "csrf": session.csrf, "mayDeactivate": mayDeactivate,
                 "name": machine.name.isEmpty ? "Machine \(machine.fingerprintHash.prefix(8))" : machine.name, "platform": machine.platform,
                 "first": DateView(machine.firstSeen).values, "last": DateView(machine.lastSeen).values]
            },
            "hasSeats": !overview.seats.isEmpty,
            "seats": overview.seats.map { ["user": $0.user, "client": $0.clientId, "since": DateView($0.acquiredAt, withTime: true).values] as [String: Any] },
            "hasUsage": !(overview.usage?.features.isEmpty ?? true),
            "usage": (overview.usage?.features ?? []).map { ["feature": $0.feature, "quantity": $0.quantity] as [String: Any] },
        ]
        if let subscription = overview.subscription {
            values["subscription"] = Words.subscriptionStatus(subscription.status) + (subscription.periodEnd > 0 ? ", paid until \(Words.day(subscription.periodEnd))" : "")
        }
        let alertList = (try? alertsPart.get())?.alerts ?? []
        values["hasAlerts"] = !alertList.isEmpty
        values["alerts"] = alertList.map { ["rule": Words.rule($0.rule), "detail": $0.detail, "raised": DateView($0.raisedAt).values, "acknowledged": $0.acknowledged] as [String: Any] }
        let timeline = (try? auditPart.get())?.events ?? []
        values["hasTimeline"] = !timeline.isEmpty
        values["timelineNote"] = mayAudit ? "Nothing recorded yet." : "Your role does not read the audit log."
        values["timeline"] = timeline.map { ["at": DateView($0.occurredAt, withTime: true).values, "action": $0.action, "actor": $0.actor] as [String: Any] }
        return Self.html(Self.render("license", values, title: "License \(license.id)", session: session, current: "/licenses", notice: sessions.takeNotice(session.id)))
    }
}
