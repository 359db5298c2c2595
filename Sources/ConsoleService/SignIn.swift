import Hummingbird
import LicensingRPC
import LicensingWire

// Signing in and out, sign-in links, and the one reveal of a purchased key. Every form
// carries the session's CSRF token, so the sign-in pages start an anonymous session.

extension ConsoleService {
    func addSignIn(to router: Router<ConsoleContext>) {
        router.get("/sign-in") { [self] request, _ in
            let (session, cookie) = anonymousSession(request)
            return Self.html(Self.render("signIn", [:], title: "Sign in", session: session, notice: sessions.takeNotice(session.id)), cookie: cookie)
        }
        router.post("/sign-in/holder") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request) else { return Self.forbidden() }
            let key = (form["license_key"] ?? "").trimmingCharacters(in: .whitespaces)
            do {
                let signedIn = try await gateway.call(GatewayMethods.signInHolder, SignInHolderRequest(licenseKey: key), credential: gateway.consoleKey, address: context.address)
                return holderSignedIn(signedIn, replacing: session)
            } catch let error as RPCError {
                return Self.html(Self.render("signIn", [:], title: "Sign in", session: session, error: error.sentence), status: Self.status(error))
            }
        }
        router.post("/sign-in/operator") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request) else { return Self.forbidden() }
            let key = (form["api_key"] ?? "").trimmingCharacters(in: .whitespaces)
            do {
                let identity = try await gateway.call(GatewayMethods.whoAmI, WhoAmIRequest(), credential: key, address: context.address)
                guard let apiKey = identity.apiKey else { throw RPCError(.unauthenticated, "the gateway did not say whose key this is") }
                let signedIn = sessions.create(.operator(OperatorIdentity(apiKey: key, key: apiKey, allowed: Set(identity.allowedMethods))), replacing: session.id)
                return Self.redirect("/licenses", cookie: sessionCookie(signedIn))
            } catch let error as RPCError {
                let message = error.code == .permissionDenied ? "This key may not sign in to the console (holder and product keys cannot)." : error.sentence
                return Self.html(Self.render("signIn", [:], title: "Sign in", session: session, error: message), status: Self.status(error))
            }
        }
        // The link only shows a button: mail scanners that open links must not use it up.
        router.get("/sign-in/link/:token") { [self] request, context in
            let (session, cookie) = anonymousSession(request)
            let values: [String: Any] = [
                "heading": "Sign in to your licenses", "explanation": "This link signs you in once. Continue to see your licenses.",
                "action": "/sign-in/link", "token": context.parameters.get("token") ?? "", "button": "Continue",
            ]
            return Self.html(Self.render("confirmLink", values, title: "Sign in", session: session), cookie: cookie)
        }
        router.post("/sign-in/link") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request) else { return Self.forbidden() }
            do {
                let signedIn = try await gateway.call(
                    GatewayMethods.signInHolder, SignInHolderRequest(linkToken: form["token"] ?? ""), credential: gateway.consoleKey, address: context.address)
                return holderSignedIn(signedIn, replacing: session)
            } catch let error as RPCError {
                return Self.html(Self.render("signIn", [:], title: "Sign in", session: session, error: error.sentence), status: Self.status(error))
            }
        }
        router.get("/reveal/:token") { [self] request, context in
            let (session, cookie) = anonymousSession(request)
            let values: [String: Any] = [
                "heading": "Reveal your license key",
                "explanation": "Your key is shown once, on the next page. Have somewhere safe ready to keep it, then continue.",
                "action": "/reveal", "token": context.parameters.get("token") ?? "", "button": "Show my key once",
            ]
            return Self.html(Self.render("confirmLink", values, title: "Your license key", session: session), cookie: cookie)
        }
        router.post("/reveal") { [self] request, context in
            var request = request
            guard let (session, form) = try await checkedForm(&request) else { return Self.forbidden() }
            do {
                let revealed = try await gateway.call(
                    GatewayMethods.revealLicenseKey, RevealLicenseKeyRequest(token: form["token"] ?? ""), credential: gateway.consoleKey, address: context.address)
                return Self.html(Self.render("revealed", ["key": revealed.licenseKey, "licenseID": revealed.licenseId], title: "Your license key", session: session))
            } catch let error as RPCError {
                let values: [String: Any] = ["heading": "The key cannot be shown", "text": error.sentence, "back": "/sign-in"]
                return Self.html(Self.render("message", values, title: "Your license key", session: session), status: Self.status(error))
            }
        }
        router.post("/sign-out") { [self] request, _ in
            var request = request
            guard let (session, _) = try await checkedForm(&request) else { return Self.forbidden() }
            sessions.end(session.id)
            let fresh = sessions.create(.anonymous)
            sessions.setNotice(fresh.id, "You are signed out.")
            return Self.redirect("/sign-in", cookie: sessionCookie(fresh))
        }
    }

    /// The request's session, or a new anonymous one with the cookie that names it.
    func anonymousSession(_ request: Request) -> (ConsoleSession, String?) {
        if let session = session(request) { return (session, nil) }
        let session = sessions.create(.anonymous)
        return (session, sessionCookie(session))
    }

    private func holderSignedIn(_ answer: SignInHolderResponse, replacing session: ConsoleSession) -> Response {
        let holder = HolderIdentity(token: answer.holderToken, expiresAt: answer.expiresAt, licenseID: answer.licenseId, customerID: answer.customerId)
        let signedIn = sessions.create(.holder(holder), replacing: session.id)
        return Self.redirect("/my", cookie: sessionCookie(signedIn))
    }

    static func status(_ error: RPCError) -> HTTPResponse.Status {
        switch error.code {
        case .unauthenticated: .unauthorized
        case .permissionDenied: .forbidden
        case .notFound: .notFound
        case .invalidArgument, .failedPrecondition, .outOfRange: .badRequest
        case .resourceExhausted: .tooManyRequests
        case .unavailable, .deadlineExceeded: .serviceUnavailable
        default: .internalServerError
        }
    }
}
