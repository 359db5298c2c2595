import Foundation
import Hummingbird
import LicensingCore
import LicensingRPC
import LicensingWire

// Operators' pages. Each call goes to the gateway with the operator's own key, so the
// gateway's permissions decide; the console shows a control only when WhoAmI said the
// role may use it, and a forged POST still meets the gateway's refusal.

extension ConsoleService {
    /// The license actions, what each calls and what the confirmation page says.
    struct LicenseAction {
        let name: String
        let label: String
        let method: WireMethodInfo
        let explanation: String
        let danger: Bool
        let needsReason: Bool
    }

    static let licenseActions: [LicenseAction] = [
        LicenseAction(name: "suspend", label: "Suspend", method: IssuanceMethods.suspendLicense.info,
                      explanation: "The license stops working at once, on every machine, until it is reinstated.", danger: true, needsReason: true),
        LicenseAction(name: "reinstate", label: "Reinstate", method: IssuanceMethods.reinstateLicense.info,
                      explanation: "The license works again as before it was suspended.", danger: false, needsReason: true),
        LicenseAction(name: "revoke", label: "Revoke", method: IssuanceMethods.revokeLicense.info,
                      explanation: "The license stops working for good. This cannot be undone.", danger: true, needsReason: true),
        LicenseAction(name: "renew", label: "Renew", method: IssuanceMethods.renewLicense.info,
                      explanation: "The license is extended by its policy's duration from its current end (or from today, if it has ended).", danger: false, needsReason: false),
    ]

    func operatorSession(_ request: Request) -> (ConsoleSession, OperatorIdentity)? {
        guard let session = session(request), case .operator(let identity) = session.subject else { return nil }
        return (session, identity)
    }

    func addOperatorPages(to router: Router<ConsoleContext>) {
        router.get("/licenses") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            return await licensesPage(request, context, session, identity)
        }
        router.get("/licenses/:id") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            return await licensePage(context.parameters.get("id") ?? "", context, session, identity)
        }
        router.get("/licenses/:id/confirm") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            let id = context.parameters.get("id") ?? ""
            guard let action = Self.licenseActions.first(where: { $0.name == request.uri.queryParameters.get("action") }), identity.may(action.method) else {
                return Self.html(Self.render("message", ["heading": "Not allowed", "text": "Your role may not do this.", "back": "/licenses/\(id)"], title: "Not allowed", session: session), status: .forbidden)
            }
            let values: [String: Any] = [
                "id": id, "name": action.name, "label": action.label, "explanation": action.explanation, "danger": action.danger,
                "needsReason": action.needsReason, "shownToHolder": action.name != "reinstate",
            ]
            return Self.html(Self.render("confirmAction", values, title: "\(action.label) license", session: session, current: "/licenses"))
        }
        for action in Self.licenseActions {
            router.post("/licenses/:id/\(action.name)") { [self] request, context in
                var request = request
                guard let (session, form) = try await checkedForm(&request), case .operator(let identity) = session.subject else { return Self.forbidden() }
                let id = context.parameters.get("id") ?? ""
                let reason = form["reason"] ?? ""
                do {
                    let license: License
                    switch action.name {
                    case "suspend": license = try await gateway.call(IssuanceMethods.suspendLicense, LicenseTransitionRequest(id: id, reason: reason), credential: identity.apiKey, address: context.address)
                    case "reinstate": license = try await gateway.call(IssuanceMethods.reinstateLicense, LicenseTransitionRequest(id: id, reason: reason), credential: identity.apiKey, address: context.address)
                    case "revoke": license = try await gateway.call(IssuanceMethods.revokeLicense, LicenseTransitionRequest(id: id, reason: reason), credential: identity.apiKey, address: context.address)
                    default: license = try await gateway.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: id), credential: identity.apiKey, address: context.address)
                    }
                    sessions.setNotice(session.id, "\(action.label): done. The license is now \(Words.state(license.state).lowercased()).")
                    return Self.redirect("/licenses/\(id)")
                } catch let error as RPCError {
                    return Self.html(Self.render("message", ["heading": "\(action.label) failed", "text": error.sentence, "back": "/licenses/\(id)"], title: "\(action.label) failed", session: session),
                                     status: Self.status(error))
                }
            }
        }
        router.post("/licenses/:id/entitlements") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request), case .operator(let identity) = session.subject else { return Self.forbidden() }
            let id = context.parameters.get("id") ?? ""
            let features = (form["features"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard let machines = UInt32(form["max_machines"] ?? "0"), let seats = UInt32(form["max_seats"] ?? "0") else {
                return Self.html(Self.render("message", ["heading": "Not saved", "text": "Machines and seats must be whole numbers from 0.", "back": "/licenses/\(id)"], title: "Not saved", session: session), status: .badRequest)
            }
            do {
                _ = try await gateway.call(
                    IssuanceMethods.changeEntitlements, ChangeEntitlementsRequest(id: id, features: features, maxMachines: machines, maxSeats: seats, replaceFeatures: true),
                    credential: identity.apiKey, address: context.address)
                sessions.setNotice(session.id, "Entitlements saved.")
                return Self.redirect("/licenses/\(id)")
            } catch let error as RPCError {
                return Self.html(Self.render("message", ["heading": "Not saved", "text": error.sentence, "back": "/licenses/\(id)"], title: "Not saved", session: session), status: Self.status(error))
            }
        }
        router.post("/licenses/:id/deactivate") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request), case .operator(let identity) = session.subject else { return Self.forbidden() }
            let id = context.parameters.get("id") ?? ""
            do {
                let answer = try await gateway.call(
                    ValidationMethods.deactivate, DeactivateRequest(licenseId: id, machineId: form["machine_id"] ?? ""), credential: identity.apiKey, address: context.address)
                sessions.setNotice(session.id, answer.deactivated ? "The machine is deactivated." : "That machine was not activated.")
                return Self.redirect("/licenses/\(id)")
            } catch let error as RPCError {
                return Self.html(Self.render("message", ["heading": "Not deactivated", "text": error.sentence, "back": "/licenses/\(id)"], title: "Not deactivated", session: session), status: Self.status(error))
            }
        }
        router.get("/catalogue") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            return await cataloguePage(context, session, identity)
        }
        router.get("/customers") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            return await customersPage(context, session, identity, link: nil)
        }
        router.post("/customers/:id/sign-in-link") { [self] request, context in
            var request = request
            guard let (session, _) = try await checkedForm(&request), case .operator(let identity) = session.subject else { return Self.forbidden() }
            let id = context.parameters.get("id") ?? ""
            do {
                let link = try await gateway.call(GatewayMethods.createSignInLink, CreateSignInLinkRequest(customerId: id), credential: identity.apiKey, address: context.address)
                return await customersPage(context, session, identity, link: (id, link))
            } catch let error as RPCError {
                return Self.html(Self.render("message", ["heading": "No link made", "text": error.sentence, "back": "/customers"], title: "No link made", session: session), status: Self.status(error))
            }
        }
        router.get("/alerts") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            return await alertsPage(context, session, identity)
        }
        router.post("/alerts/:id/acknowledge") { [self] request, context in
            var request = request
            guard let (session, _) = try await checkedForm(&request), case .operator(let identity) = session.subject else { return Self.forbidden() }
            do {
                _ = try await gateway.call(UsageMethods.acknowledgeAlert, GetByIdRequest(id: context.parameters.get("id") ?? ""), credential: identity.apiKey, address: context.address)
                sessions.setNotice(session.id, "Alert acknowledged.")
                return Self.redirect("/alerts")
            } catch let error as RPCError {
                return Self.html(Self.render("message", ["heading": "Not acknowledged", "text": error.sentence, "back": "/alerts"], title: "Not acknowledged", session: session), status: Self.status(error))
            }
        }
        router.get("/reports") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            let kind = ReportKind(rawValue: request.uri.queryParameters.get("kind") ?? "usage") ?? .usage
            let report = await self.report(kind, context, identity)
            var values: [String: Any] = [
                "kind": kind.rawValue, "columns": report.columns, "rows": report.rows.map { ["cells": $0] },
                "kinds": ReportKind.allCases.map { ["kind": $0.rawValue, "label": $0.label, "current": $0 == kind] as [String: Any] },
                "parts": report.error.map { [$0] } ?? [], "summary": report.summary,
            ]
            if !report.bars.isEmpty {
                values["chart"] = ["svg": BarChart.svg(report.bars, title: report.chartTitle), "caption": report.chartTitle]
            }
            return Self.html(Self.render("reports", values, title: "\(kind.label) report", session: session, current: "/reports"))
        }
        router.get("/reports/:file") { [self] request, context in
            guard let (_, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            let file = context.parameters.get("file") ?? ""
            guard file.hasSuffix(".csv"), let kind = ReportKind(rawValue: String(file.dropLast(4))) else { return Response(status: .notFound) }
            let report = await self.report(kind, context, identity)
            if let error = report.error { return Response(status: .serviceUnavailable, body: ResponseBody(byteBuffer: ByteBuffer(string: error))) }
            let csv = ([report.columns] + report.rows).map { $0.map(Self.csvField).joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
            return Response(
                status: .ok, headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"\(kind.rawValue)-report.csv\""],
                body: ResponseBody(byteBuffer: ByteBuffer(string: csv)))
        }
        router.get("/webhooks") { [self] request, context in
            guard let (session, identity) = operatorSession(request) else { return Self.redirect("/sign-in") }
            async let endpoints = gateway.part(IntegrationsMethods.listWebhookEndpoints, ListWebhookEndpointsRequest(), credential: identity.apiKey, address: context.address)
            async let deliveries = gateway.part(IntegrationsMethods.listDeliveries, ListDeliveriesRequest(page: PageRequest(pageSize: 50)), credential: identity.apiKey, address: context.address)
            let (endpointsPart, deliveriesPart) = await (endpoints, deliveries)
            var parts: [String] = []
            if case .failure(let error) = endpointsPart { parts.append("Endpoints: \(error.sentence)") }
            if case .failure(let error) = deliveriesPart { parts.append("Deliveries: \(error.sentence)") }
            let values: [String: Any] = [
                "parts": parts,
                "endpoints": ((try? endpointsPart.get())?.endpoints ?? []).map { endpoint -> [String: Any] in
                    ["url": endpoint.url, "events": endpoint.eventTypes.isEmpty ? "all" : endpoint.eventTypes.joined(separator: ", "),
                     "status": endpoint.disabled ? "Disabled: \(endpoint.disabledReason)" : endpoint.failingSince > 0 ? "Failing since \(Words.day(endpoint.failingSince))" : "Delivering"]
                },
                "deliveries": ((try? deliveriesPart.get())?.deliveries ?? []).map { delivery -> [String: Any] in
                    ["event": delivery.eventId, "type": delivery.eventType, "status": delivery.status, "attempts": delivery.attempts,
                     "answer": delivery.lastStatusCode > 0 ? "HTTP \(delivery.lastStatusCode)" : delivery.lastError]
                },
            ]
            return Self.html(Self.render("webhooks", values, title: "Webhooks", session: session, current: "/webhooks"))
        }
    }

    static func csvField(_ text: String) -> String {
        // A cell starting with = + - @ is not run as a formula by spreadsheets.
        var text = text
        if let first = text.first, "=+-@".contains(first) { text = "'" + text }
        return text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"\(text.replacingOccurrences(of: "\"", with: "\"\""))\"" : text
    }

    private func cataloguePage(_ context: ConsoleContext, _ session: ConsoleSession, _ identity: OperatorIdentity) async -> Response {
        async let products = gateway.part(IssuanceMethods.listProducts, ListProductsRequest(page: PageRequest(pageSize: 200)), credential: identity.apiKey, address: context.address)
        async let policies = gateway.part(IssuanceMethods.listPolicies, ListPoliciesRequest(page: PageRequest(pageSize: 1000)), credential: identity.apiKey, address: context.address)
        let (productsPart, policiesPart) = await (products, policies)
        var parts: [String] = []
        if case .failure(let error) = productsPart { parts.append(error.sentence) }
        let policyList = (try? policiesPart.get())?.policies ?? []
        func duration(_ seconds: Int64) -> String { seconds == 0 ? "—" : seconds % 86400 == 0 ? "\(seconds / 86400) days" : "\(seconds / 3600) hours" }
        let values: [String: Any] = [
            "parts": parts,
            "products": ((try? productsPart.get())?.products ?? []).map { product -> [String: Any] in
                let own = policyList.filter { $0.productId == product.id }
                return [
                    "name": product.name, "code": product.code, "hasPolicies": !own.isEmpty,
                    "policies": own.map { policy -> [String: Any] in
                        ["name": policy.name, "type": Words.licenseType(policy.licenseType), "duration": policy.durationSeconds == 0 ? "perpetual" : duration(policy.durationSeconds),
                         "grace": duration(policy.graceSeconds), "machines": policy.maxMachines == 0 ? "unlimited" : "\(policy.maxMachines)",
                         "seats": policy.maxSeats == 0 ? "—" : "\(policy.maxSeats)", "features": policy.features.joined(separator: ", ")]
                    },
                ]
            },
        ]
        return Self.html(Self.render("catalogue", values, title: "Products", session: session, current: "/catalogue"))
    }

    private func customersPage(_ context: ConsoleContext, _ session: ConsoleSession, _ identity: OperatorIdentity, link: (String, CreateSignInLinkResponse)?) async -> Response {
        let answer = await gateway.part(IssuanceMethods.listCustomers, ListCustomersRequest(page: PageRequest(pageSize: 500)), credential: identity.apiKey, address: context.address)
        var parts: [String] = []
        if case .failure(let error) = answer { parts.append(error.sentence) }
        let customers = (try? answer.get())?.customers ?? []
        let mayLink = identity.may(GatewayMethods.createSignInLink)
        var values: [String: Any] = [
            "parts": parts, "mayLink": mayLink,
            "rows": customers.map { ["id": $0.id, "name": $0.name, "email": $0.email, "mayLink": mayLink, "csrf": session.csrf] as [String: Any] },
        ]
        if let (customer, made) = link {
            values["link"] = [
                "name": customers.first(where: { $0.id == customer })?.name ?? customer, "url": "/sign-in/link/\(made.token)",
                "until": DateView(made.expiresAt, withTime: true).values,
            ] as [String: Any]
        }
        return Self.html(Self.render("customers", values, title: "Customers", session: session, current: "/customers"))
    }

    private func alertsPage(_ context: ConsoleContext, _ session: ConsoleSession, _ identity: OperatorIdentity) async -> Response {
        let answer = await gateway.part(UsageMethods.listAlerts, ListAlertsRequest(includeAcknowledged: true, page: PageRequest(pageSize: 200)), credential: identity.apiKey, address: context.address)
        var parts: [String] = []
        if case .failure(let error) = answer { parts.append(error.code == .unavailable ? "Compliance alerts cannot be shown right now (license-usage is not answering)." : error.sentence) }
        let mayAck = identity.may(UsageMethods.acknowledgeAlert)
        let values: [String: Any] = [
            "parts": parts,
            "rows": ((try? answer.get())?.alerts ?? []).map { alert -> [String: Any] in
                ["id": alert.id, "rule": Words.rule(alert.rule), "licenseID": alert.licenseId, "detail": alert.detail, "raised": DateView(alert.raisedAt).values,
                 "acknowledged": alert.acknowledged, "mayAck": mayAck, "csrf": session.csrf]
            },
        ]
        return Self.html(Self.render("alerts", values, title: "Alerts", session: session, current: "/alerts", notice: sessions.takeNotice(session.id)))
    }
}
