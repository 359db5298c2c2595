import AsyncHTTPClient
import Foundation
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import NIOCore
import NIOHTTP1
import Testing

/// A browser's view of license-console over plain HTTP: a cookie jar of one session, forms
/// posted with the page's CSRF token, redirects not followed (each is checked).
final class ConsoleBrowser: @unchecked Sendable {
    let base: String
    var cookie: String?
    var csrf: String?
    static let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(redirectConfiguration: .disallow))

    init(_ base: String) { self.base = base }

    struct Page {
        let status: Int
        let body: String
        let headers: HTTPHeaders
        var location: String? { headers.first(name: "location") }
    }

    @discardableResult
    func get(_ path: String) async throws -> Page {
        try await send(HTTPClientRequest(url: base + path))
    }

    @discardableResult
    func post(_ path: String, _ fields: [String: String], csrf: String? = nil) async throws -> Page {
        var request = HTTPClientRequest(url: base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        var fields = fields
        if let token = csrf ?? self.csrf, fields["_csrf"] == nil { fields["_csrf"] = token }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        let body = fields.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")" }.joined(separator: "&")
        request.body = .bytes(ByteBuffer(string: body))
        return try await send(request)
    }

    private func send(_ request: HTTPClientRequest) async throws -> Page {
        var request = request
        if let cookie { request.headers.add(name: "Cookie", value: "lm_session=\(cookie)") }
        let response = try await Self.client.execute(request, timeout: .seconds(30))
        let body = String(buffer: try await response.body.collect(upTo: 4 << 20))
        if let set = response.headers.first(name: "set-cookie"), let value = set.split(separator: ";").first?.split(separator: "=", maxSplits: 1).last {
            cookie = value.isEmpty ? nil : String(value)
        }
        if let range = body.range(of: #"name="_csrf" value="([0-9a-f]{64})""#, options: .regularExpression) {
            csrf = String(body[range].dropFirst(#"name="_csrf" value=""#.count).prefix(64))
        }
        return Page(status: Int(response.status.code), body: body, headers: response.headers)
    }

    /// Signs in as an operator with an API key.
    func signInOperator(_ key: String) async throws -> Page {
        try await get("/sign-in")
        return try await post("/sign-in/operator", ["api_key": key])
    }

    func signInHolder(_ licenseKey: String) async throws -> Page {
        try await get("/sign-in")
        return try await post("/sign-in/holder", ["license_key": licenseKey])
    }
}

/// What the console's tests share: a stack with the console, a product with two plans, a
/// customer with two licenses, keys for every role.
struct ConsoleFixture {
    let stack: Stack
    let console: String
    let admin: RPCClient
    let license: IssueLicenseResponse
    let other: IssueLicenseResponse
    let customer: Customer
    let product: Product

    static func make(productName: String = "Studio") async throws -> ConsoleFixture {
        let stack = try Stack()
        // Webhook endpoints on this machine (a closed port): nothing leaves it.
        stack.environment["integrations"] = ["LM_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"]
        try await stack.startAll()
        let console = try await stack.startConsole()
        let admin = stack.gatewayClient()
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: productName, code: "STU"))
        let basic = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Basic", licenseType: .perDevice, durationSeconds: 365 * 86400, graceSeconds: 14 * 86400, maxMachines: 3,
            features: ["render", "export"])))
        _ = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Pro", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 10, features: ["render", "export", "cloud-sync"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Acme Films", email: "it@acme.test"))
        let license = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: basic.id, customerId: customer.id))
        let otherCustomer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Other Co", email: "it@other.test"))
        let other = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: basic.id, customerId: otherCustomer.id))
        return ConsoleFixture(stack: stack, console: console, admin: admin, license: license, other: other, customer: customer, product: product)
    }

    func key(_ role: Role) async throws -> String {
        try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "\(role)", role: role)).secret
    }

    /// Activates a machine, waiting out the gateway's per-key activation limit.
    func activate(_ license: IssueLicenseResponse, _ fingerprint: String) async throws -> String {
        while true {
            do {
                let answer = try await admin.call(
                    ValidationMethods.activate, ActivateRequest(licenseKey: license.licenseKey, fingerprint: fingerprint, machineName: "Workstation \(fingerprint.prefix(4))"))
                return answer.machine?.id ?? ""
            } catch let error as RPCError where error.code == .resourceExhausted {
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}

@Suite(.serialized) struct ConsoleTests {
    @Test func aHolderSignsInSeesStateFeaturesRenewalAndDeactivatesAMachine() async throws {
        let fixture = try await ConsoleFixture.make()
        let machine = try await fixture.activate(fixture.license, "fp-holder-1")
        let browser = ConsoleBrowser(fixture.console)

        // A wrong key says so, and says nothing about other tenants.
        let wrong = try await browser.signInHolder("NOT-A-KEY")
        #expect(wrong.status == 401 && wrong.body.contains("this is not a license key"))
        let unknown = try await browser.post("/sign-in/holder", ["license_key": LicenseKey.generate().description])
        #expect(unknown.status == 401 && unknown.body.contains("no license has this key"), "\(unknown.body.suffix(400))")

        let signedIn = try await browser.post("/sign-in/holder", ["license_key": fixture.license.licenseKey])
        #expect(signedIn.status == 303 && signedIn.location == "/my")
        let page = try await browser.get("/my")
        #expect(page.status == 200)
        #expect(page.body.contains("Active.") && page.body.contains("Active until"))
        #expect(page.body.contains("render") && page.body.contains("cloud-sync") && page.body.contains("not in your plan"))
        #expect(page.body.contains("grace period until"))
        #expect(page.body.contains("Workstation"))
        #expect(!page.body.contains(fixture.other.license!.id), "another customer's license is on the page")

        let deactivated = try await browser.post("/my/deactivate", ["license_id": fixture.license.license!.id, "machine_id": machine])
        #expect(deactivated.status == 303)
        let after = try await browser.get("/my")
        #expect(after.body.contains("The machine is deactivated") && after.body.contains("No machine is activated"))

        // An offline file for a machine, as a download.
        var request = try await browser.post("/my/offline", ["license_id": fixture.license.license!.id, "fingerprint": "fp-offline-7"])
        #expect(request.status == 200 && request.body.contains("BEGIN LICENSE CERTIFICATE"), "\(request.body.prefix(300))")
        #expect(request.headers.first(name: "content-disposition")?.contains("attachment") == true)
        // Signing out ends the session: the next page asks to sign in.
        request = try await browser.post("/sign-out", [:])
        #expect(request.status == 303)
        #expect(try await browser.get("/my").location == "/sign-in")
    }

    @Test func aHolderTokenReachesOnlyItsOwnLicense() async throws {
        let fixture = try await ConsoleFixture.make()
        let othersMachine = try await fixture.activate(fixture.other, "fp-other-1")
        let browser = ConsoleBrowser(fixture.console)
        _ = try await browser.signInHolder(fixture.license.licenseKey)
        _ = try await browser.get("/my")
        // Through the console: another license's machine stays where it is.
        #expect(try await browser.post("/my/deactivate", ["license_id": fixture.other.license!.id, "machine_id": othersMachine]).status == 303)
        let mine = try await browser.get("/my")
        #expect(mine.body.contains("could not be deactivated"), "\(mine.body)")
        let offline = try await browser.post("/my/offline", ["license_id": fixture.other.license!.id, "fingerprint": "fp-x"])
        #expect(offline.status == 303)
        // At the gateway itself, with the holder token: nothing outside the scope, no other method.
        let console = try await fixture.key(.console)
        let signIn = fixture.stack.gatewayClient(apiKey: console)
        let token = try await signIn.call(GatewayMethods.signInHolder, SignInHolderRequest(licenseKey: fixture.license.licenseKey)).holderToken
        let holder = fixture.stack.gatewayClient(apiKey: token)
        await #expect(throws: RPCError.self) {
            _ = try await holder.call(GatewayMethods.holderDeactivate, HolderDeactivateRequest(licenseId: fixture.other.license!.id, machineId: othersMachine))
        }
        for method in [IssuanceMethods.getLicense.name, IssuanceMethods.revokeLicense.name, ValidationMethods.listMachines.name, GatewayMethods.licenseOverview.name] {
            do {
                _ = try await holder.callRaw(method, payload: [], metadata: [:], deadline: .now + .seconds(10))
                Issue.record("a holder token called \(method)")
            } catch let error as RPCError {
                #expect(error.code == .permissionDenied, "\(method): \(error)")
            }
        }
        let machines = try await fixture.admin.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: fixture.other.license!.id))
        #expect(machines.machines.map(\.id) == [othersMachine])
        await holder.close()
        await signIn.close()
    }

    /// Every operator action of the console, for every role, against what the gateway's
    /// permission table allows that role (WhoAmI answers it from the table): allowed
    /// actions succeed, the others are refused and change nothing. A role's page shows
    /// only the controls it may use.
    @Test func everyConsoleActionFollowsTheGatewaysPermissionTable() async throws {
        let fixture = try await ConsoleFixture.make()
        let id = fixture.license.license!.id
        struct Action {
            let path: String
            let fields: [String: String]
            let method: String
        }
        for role in [Role.admin, .issuer, .support, .auditor, .integration, .product] {
            let key = try await fixture.key(role)
            let probe = fixture.stack.gatewayClient(apiKey: key)
            let allowed = Set(try await probe.call(GatewayMethods.whoAmI, WhoAmIRequest()).allowedMethods)
            await probe.close()
            let browser = ConsoleBrowser(fixture.console)
            let signedIn = try await browser.signInOperator(key)
            #expect(signedIn.status == 303, "\(role) signs in: \(signedIn.body.suffix(300))")
            let page = try await browser.get("/licenses/\(id)")
            let showsRevoke = page.body.contains("action=revoke")
            #expect(showsRevoke == allowed.contains(IssuanceMethods.revokeLicense.name), "\(role): revoke button shown \(showsRevoke)")
            let machine = try await fixture.activate(fixture.license, "fp-\(role)")
            let actions = [
                Action(path: "/licenses/\(id)/suspend", fields: ["reason": "check"], method: IssuanceMethods.suspendLicense.name),
                Action(path: "/licenses/\(id)/reinstate", fields: ["reason": "check"], method: IssuanceMethods.reinstateLicense.name),
                Action(path: "/licenses/\(id)/renew", fields: [:], method: IssuanceMethods.renewLicense.name),
                Action(path: "/licenses/\(id)/entitlements", fields: ["features": "render,export", "max_machines": "40", "max_seats": "0"], method: IssuanceMethods.changeEntitlements.name),
                Action(path: "/licenses/\(id)/deactivate", fields: ["machine_id": machine], method: ValidationMethods.deactivate.name),
                Action(path: "/customers/\(fixture.customer.id)/sign-in-link", fields: [:], method: GatewayMethods.createSignInLink.name),
            ]
            for action in actions {
                let answer = try await browser.post(action.path, action.fields)
                let succeeded = answer.status == 303 || (answer.status == 200 && answer.body.contains("sign-in-link"))
                #expect(succeeded == allowed.contains(action.method), "\(role) \(action.path): \(answer.status) \(answer.body.suffix(200))")
                if !allowed.contains(action.method) { #expect(answer.status == 403 || answer.status == 303, "\(role) \(action.path): \(answer.status)") }
            }
            let machines = try await fixture.admin.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: id))
            #expect(machines.machines.contains { $0.id == machine } == !allowed.contains(ValidationMethods.deactivate.name), "\(role): machine left as the table says")
            _ = try await fixture.admin.call(ValidationMethods.deactivate, DeactivateRequest(licenseId: id, machineId: machine))
        }
        // Revoke last: a support key is refused (a forged POST with a valid token), an issuer revokes.
        let support = ConsoleBrowser(fixture.console)
        _ = try await support.signInOperator(try await fixture.key(.support))
        _ = try await support.get("/licenses/\(id)")
        let refused = try await support.post("/licenses/\(id)/revoke", ["reason": "forged"])
        #expect(refused.status == 403)
        #expect(try await fixture.admin.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).state != .revoked)
    }

    @Test func formsWithoutTheSessionsTokenAreRefusedAndValuesAreEscaped() async throws {
        let fixture = try await ConsoleFixture.make(productName: "<script>alert(1)</script>")
        let id = fixture.license.license!.id
        let issuer = ConsoleBrowser(fixture.console)
        _ = try await issuer.signInOperator(try await fixture.key(.issuer))
        let other = ConsoleBrowser(fixture.console)
        _ = try await other.signInOperator(try await fixture.key(.issuer))
        _ = try await other.get("/licenses")

        // No token, another session's token: refused, nothing changed.
        #expect(try await issuer.post("/licenses/\(id)/revoke", ["reason": "x", "_csrf": ""]).status == 403)
        #expect(try await issuer.post("/licenses/\(id)/revoke", ["reason": "x"], csrf: other.csrf).status == 403)
        let noSession = ConsoleBrowser(fixture.console)
        #expect(try await noSession.post("/licenses/\(id)/revoke", ["reason": "x", "_csrf": String(repeating: "a", count: 64)]).status == 403)
        #expect(try await fixture.admin.call(IssuanceMethods.getLicense, GetLicenseRequest(id: id)).state == .active)

        // The product's name is shown as text.
        let page = try await issuer.get("/licenses/\(id)")
        #expect(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!page.body.contains("<script>alert(1)</script>"))
        let catalogue = try await issuer.get("/catalogue")
        #expect(catalogue.body.contains("&lt;script&gt;") && !catalogue.body.contains("<script>alert"))

        // Headers: a policy without inline script, cookies that scripts cannot read.
        let policy = page.headers.first(name: "content-security-policy") ?? ""
        #expect(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline") && policy.contains("frame-ancestors 'none'"))
        #expect(page.headers.first(name: "x-frame-options") == "DENY")
        let signIn = try await ConsoleBrowser(fixture.console).get("/sign-in")
        let cookie = signIn.headers.first(name: "set-cookie") ?? ""
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"))
        #expect(!page.body.contains(" onclick=") && !page.body.contains("<script>"), "inline script on the page")

        // The revoke itself, with the right token, works; the page then says so.
        _ = try await issuer.get("/licenses/\(id)/confirm?action=revoke")
        #expect(try await issuer.post("/licenses/\(id)/revoke", ["reason": "chargeback"]).status == 303)
        #expect(try await issuer.get("/licenses/\(id)").body.contains("Revoked"))
    }

    @Test func aPageWithTheUsageBackendStoppedShowsTheRest() async throws {
        let fixture = try await ConsoleFixture.make()
        let id = fixture.license.license!.id
        await fixture.stack.stop("usage")
        let operatorBrowser = ConsoleBrowser(fixture.console)
        _ = try await operatorBrowser.signInOperator(fixture.stack.adminKey)
        let page = try await operatorBrowser.get("/licenses/\(id)")
        #expect(page.status == 200)
        #expect(page.body.contains("Active.") && page.body.contains("license-usage is not answering"), "\(page.body.suffix(1500))")
        let alerts = try await operatorBrowser.get("/alerts")
        #expect(alerts.status == 200 && alerts.body.contains("cannot be shown right now"))
        let holder = ConsoleBrowser(fixture.console)
        _ = try await holder.signInHolder(fixture.license.licenseKey)
        let mine = try await holder.get("/my")
        #expect(mine.status == 200 && mine.body.contains("Active.") && mine.body.contains("cannot be shown right now"))
    }

    @Test func signInLinksWorkOnceAndFailedSignInsAreLimitedPerPerson() async throws {
        let fixture = try await ConsoleFixture.make()
        let operatorBrowser = ConsoleBrowser(fixture.console)
        _ = try await operatorBrowser.signInOperator(try await fixture.key(.support))
        _ = try await operatorBrowser.get("/customers")
        let made = try await operatorBrowser.post("/customers/\(fixture.customer.id)/sign-in-link", [:])
        let range = try #require(made.body.range(of: #"/sign-in/link/lms_[A-Za-z0-9_.-]+"#, options: .regularExpression))
        let link = String(made.body[range])
        let holder = ConsoleBrowser(fixture.console)
        let confirm = try await holder.get(link)
        #expect(confirm.status == 200 && confirm.body.contains("Continue"))
        let token = String(link.dropFirst("/sign-in/link/".count))
        #expect(try await holder.post("/sign-in/link", ["token": token]).location == "/my")
        #expect(try await holder.get("/my").body.contains(fixture.license.license!.id))
        let again = ConsoleBrowser(fixture.console)
        _ = try await again.get(link)
        let reused = try await again.post("/sign-in/link", ["token": token])
        #expect(reused.status == 401 && reused.body.contains("used already"))

        // Wrong keys from one person: after ten, the gateway makes them wait.
        let guesser = ConsoleBrowser(fixture.console)
        _ = try await guesser.get("/sign-in")
        var statuses: [Int] = []
        for _ in 0..<12 { statuses.append(try await guesser.post("/sign-in/holder", ["license_key": LicenseKey.generate().description]).status) }
        #expect(statuses.contains(429), "\(statuses)")
    }

    @Test func aPurchasedKeyIsRevealedOnceThroughTheConsole() async throws {
        let fixture = try await ConsoleFixture.make()
        let policy = try #require(try await fixture.admin.call(IssuanceMethods.listPolicies, ListPoliciesRequest(productId: fixture.product.id)).policies.first)
        let sealed = try await fixture.admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: fixture.customer.id, sealKeyForReveal: true))
        #expect(sealed.licenseKey.isEmpty && sealed.revealToken.hasPrefix("lmr_") && sealed.revealExpiresAt > 0)
        let browser = ConsoleBrowser(fixture.console)
        // Opening the link shows a button only: a mail scanner's visit reveals nothing.
        let landing = try await browser.get("/reveal/\(sealed.revealToken)")
        #expect(landing.status == 200 && landing.body.contains("Show my key once") && !landing.body.contains("revealed-key"))
        let shown = try await browser.post("/reveal", ["token": sealed.revealToken])
        let range = try #require(shown.body.range(of: #"id="revealed-key">[0-9A-Z-]+<"#, options: .regularExpression))
        let key = String(shown.body[range].dropFirst(#"id="revealed-key">"#.count).dropLast())
        #expect(try await fixture.admin.call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: key)).id == sealed.license?.id)
        #expect(shown.headers.first(name: "cache-control") == "no-store")
        let again = try await ConsoleBrowser(fixture.console).get("/reveal/\(sealed.revealToken)")
        #expect(again.status == 200)
        let second = try await browser.post("/reveal", ["token": sealed.revealToken])
        #expect(second.status == 404 && second.body.contains("used already") && !second.body.contains(key))
        // Nothing but the console's own key may reveal.
        let issuerClient = fixture.stack.gatewayClient(apiKey: try await fixture.key(.issuer))
        await #expect(throws: RPCError.self) {
            _ = try await issuerClient.call(GatewayMethods.revealLicenseKey, RevealLicenseKeyRequest(token: sealed.revealToken))
        }
        await issuerClient.close()
    }

    @Test func reportsAlertsAndWebhooksPages() async throws {
        let fixture = try await ConsoleFixture.make()
        let id = fixture.license.license!.id
        _ = try await fixture.admin.call(UsageMethods.recordUsage, RecordUsageRequest(events: [
            UsageEvent(eventId: "u-1", licenseKey: fixture.license.licenseKey, feature: "render", quantity: 42, occurredAt: Int64(Date().timeIntervalSince1970)),
        ]))
        _ = try await fixture.admin.call(UsageMethods.reportTamper, TamperReport(licenseKey: fixture.license.licenseKey, kind: "clock-rollback", detail: "clock moved back 3 days"))
        let auditor = ConsoleBrowser(fixture.console)
        _ = try await auditor.signInOperator(try await fixture.key(.auditor))
        // The usage report: a chart drawn on the server, and the same rows as CSV.
        var page = ConsoleBrowser.Page(status: 0, body: "", headers: [:])
        // Polled slowly: an auditor's key may make 20 calls a second.
        let charted = await eventually(within: .seconds(30), every: .milliseconds(300)) {
            page = (try? await auditor.get("/reports?kind=usage")) ?? page
            return page.body.contains("<svg") && page.body.contains(">render<")
        }
        #expect(charted, "\(page.body.suffix(1500))")
        let csv = try await auditor.get("/reports/usage.csv")
        #expect(csv.status == 200, "\(csv.status) \(csv.body.prefix(300))")
        #expect(csv.headers.first(name: "content-type")?.hasPrefix("text/csv") == true)
        #expect(csv.body.hasPrefix("License,Customer,Feature,Quantity") && csv.body.contains("\(id),Acme Films,render,42"), "\(csv.body.prefix(400))")
        for kind in ["compliance", "revenue", "renewals"] {
            let report = try await auditor.get("/reports?kind=\(kind)")
            #expect(report.status == 200 && report.body.contains("Download CSV"), "\(kind)")
        }
        // Alerts: the auditor reads them; an issuer acknowledges.
        var alerts = ConsoleBrowser.Page(status: 0, body: "", headers: [:])
        #expect(await eventually(within: .seconds(30), every: .milliseconds(300)) {
            alerts = (try? await auditor.get("/alerts")) ?? alerts
            return alerts.body.contains("The machine&#39;s clock was turned back") || alerts.body.contains("The machine's clock was turned back")
        }, "\(alerts.body.suffix(800))")
        #expect(!alerts.body.contains(">Acknowledge<"), "an auditor may not acknowledge")
        let issuer = ConsoleBrowser(fixture.console)
        _ = try await issuer.signInOperator(try await fixture.key(.issuer))
        let open = try await issuer.get("/alerts")
        let range = try #require(open.body.range(of: #"/alerts/[a-z0-9_]+/acknowledge"#, options: .regularExpression))
        #expect(try await issuer.post(String(open.body[range]), [:]).status == 303)
        #expect(try await issuer.get("/alerts").body.contains("Acknowledged"))
        // Webhooks: an integration key reads the endpoints.
        _ = try await fixture.admin.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: "http://127.0.0.1:9/in"))
        let integration = ConsoleBrowser(fixture.console)
        _ = try await integration.signInOperator(try await fixture.key(.integration))
        let hooks = try await integration.get("/webhooks")
        #expect(hooks.status == 200 && hooks.body.contains("http://127.0.0.1:9/in"), "\(hooks.body.suffix(600))")
    }

    /// The gateway counts failed sign-ins per person only when the console's own key vouches
    /// for the address: anyone else sending an address is counted by their own.
    @Test func onlyTheConsoleKeyMakesTheGatewayTrustAnEndUsersAddress() async throws {
        let fixture = try await ConsoleFixture.make()
        let console = try await fixture.key(.console)
        func signIn(_ metadata: RPCMetadata, credential: String) async -> StatusCode {
            let client = fixture.stack.gatewayClient(apiKey: credential)
            defer { Task { await client.close() } }
            do {
                _ = try await client.call(GatewayMethods.signInHolder, SignInHolderRequest(licenseKey: LicenseKey.generate().description), metadata: metadata, timeout: .seconds(10))
                return .ok
            } catch let error as RPCError {
                return error.code
            } catch {
                return .unknown
            }
        }
        // Twelve wrong keys, each claiming a new address, from a caller without the console key:
        // a forged console key is refused outright.
        var forged: [StatusCode] = []
        for index in 0..<3 {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.consoleKey] = "lmk_" + String(repeating: "x", count: 52)
            metadata[RPCMetadata.endUserAddress] = "203.0.113.\(index)"
            forged.append(await signIn(metadata, credential: console))
        }
        #expect(forged.allSatisfy { $0 == .unauthenticated }, "\(forged)")
        // With the console key: one person's failures lock that person out, not the next one.
        var person: [StatusCode] = []
        for _ in 0..<12 {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.consoleKey] = console
            metadata[RPCMetadata.endUserAddress] = "198.51.100.7"
            person.append(await signIn(metadata, credential: console))
        }
        #expect(person.contains(.resourceExhausted), "\(person)")
        var other = RPCMetadata()
        other[RPCMetadata.consoleKey] = console
        other[RPCMetadata.endUserAddress] = "198.51.100.8"
        let otherCode = await signIn(other, credential: console)
        #expect(otherCode == .unauthenticated, "another person is not locked out: \(otherCode)")
    }
}
