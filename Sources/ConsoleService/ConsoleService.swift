import Synchronization
import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import NIOCore
import ServiceLifecycle

/// Each request's context: Hummingbird's, plus the browser's address (passed to the
/// gateway, whose failed sign-in limits then count per person).
public struct ConsoleContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    var address: String { remoteAddress?.ipAddress ?? "unknown" }
}

/// license-console: server-rendered pages for license holders and operators. It is a client
/// of the gateway like any product: every value it shows and every change it makes goes
/// through the gateway's permission checks with the person's own credential. It keeps only
/// sessions, in memory (SessionStore says why).
public final class ConsoleService: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 7402
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Cookies are Secure unless this is turned off for a plain-HTTP test setup.
        public var secureCookies = true

        public init() {}
    }

    let gateway: ConsoleGateway
    let sessions: SessionStore
    let options: Options
    let logger: Logger
    let clock: any LicenseClock
    private let bound = SharedValue<SocketAddress?>(nil)

    public init(gateway: RPCClient, consoleKey: String, options: Options, sessions: SessionStore = SessionStore(),
                clock: any LicenseClock = SystemLicenseClock(), logger: Logger) {
        self.gateway = ConsoleGateway(client: gateway, consoleKey: consoleKey)
        self.sessions = sessions
        self.options = options
        self.clock = clock
        self.logger = logger
    }

    /// Where the HTTP listener is bound, once it is (tests bind port 0).
    public var address: SocketAddress? { bound.withLock { $0 } }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        let keyFile = settings["console-key-file"] ?? "\(settings.dataDirectory)/secrets/console-api-key"
        guard let key = try? String(contentsOfFile: keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), key.hasPrefix("lmk_") else {
            throw RPCError.invalidArgument(
                "the console needs its own CONSOLE key in \(keyFile) (or set console-key-file): licensectl apikey create --role console --name console --secret-file \(keyFile)")
        }
        var options = Options()
        let listen = settings["http-listen"] ?? "127.0.0.1:7402"
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw RPCError.invalidArgument("http-listen must be host:port, not \(listen)")
        }
        options.host = String(listen[..<colon])
        options.port = port
        options.tlsCertificate = settings["tls-cert"]
        options.tlsKey = settings["tls-key"]
        if options.tlsCertificate == nil || options.tlsKey == nil {
            guard try settings.bool("allow-plaintext-http", default: environment.developmentMode) else {
                throw RPCError.invalidArgument("the console needs TLS: set tls-cert and tls-key (or allow-plaintext-http = true behind a TLS proxy or for a local test setup)")
            }
            environment.logger.warning("console without TLS: for local development or behind a TLS proxy only")
        }
        options.secureCookies = try settings.bool("secure-cookies", default: true)
        let client = try environment.peerClient("gateway")
        let console = ConsoleService(gateway: client, consoleKey: key, options: options, logger: environment.logger)
        return [try console.application(), SessionSweeper(sessions: console.sessions)]
    }

    public func application() throws -> some Service {
        let router = Router(context: ConsoleContext.self)
        router.add(middleware: SecurityHeaders())
        router.get("/health") { _, _ in "ok" }
        router.get("/static/console.css") { _, _ in Self.asset(Assets.css, type: "text/css; charset=utf-8") }
        router.get("/static/console.js") { _, _ in Self.asset(Assets.script, type: "text/javascript; charset=utf-8") }
        router.get("/") { [self] request, context in
            switch session(request)?.subject {
            case .operator: return Self.redirect("/licenses")
            case .holder: return Self.redirect("/my")
            default: return Self.redirect("/sign-in")
            }
        }
        addSignIn(to: router)
        addHolderPages(to: router)
        addOperatorPages(to: router)
        let server: HTTPServerBuilder
        if let certificate = options.tlsCertificate, let key = options.tlsKey {
            server = try .tls(.http1(), tlsConfiguration: RPCTLS.serverConfiguration(certificateChain: certificate, privateKey: key))
        } else {
            server = .http1()
        }
        let bound = self.bound
        let logger = self.logger
        return Application(
            router: router, server: server,
            configuration: ApplicationConfiguration(address: .hostname(options.host, port: options.port), serverName: "license-console"),
            onServerRunning: { channel in
                bound.withLock { $0 = channel.localAddress }
                logger.info("console ready", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: logger)
    }

    // MARK: Sessions, forms, responses

    func session(_ request: Request) -> ConsoleSession? {
        sessions.find(Self.cookie(request, SessionStore.cookie), nowSeconds: clock.now)
    }

    static func cookie(_ request: Request, _ name: String) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name { return String(parts[1]).trimmingCharacters(in: .whitespaces) }
            }
        }
        return nil
    }

    func sessionCookie(_ session: ConsoleSession) -> String {
        "\(SessionStore.cookie)=\(session.id); Path=/; HttpOnly; SameSite=Strict\(options.secureCookies ? "; Secure" : "")"
    }

    func expiredCookie() -> String {
        "\(SessionStore.cookie)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\(options.secureCookies ? "; Secure" : "")"
    }

    /// A form's fields: URL-encoded, at most 64 KiB.
    static func form(_ request: inout Request) async throws -> [String: String] {
        let body = try await request.collectBody(upTo: 64 * 1024)
        var fields: [String: String] = [:]
        for pair in String(buffer: body).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]) else { continue }
            fields[name] = parts.count > 1 ? decode(parts[1]) ?? "" : ""
        }
        return fields
    }

    private static func decode(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// A POST is taken only from a live session with its own CSRF token in the form.
    func checkedForm(_ request: inout Request) async throws -> (ConsoleSession, [String: String])? {
        let form = try await Self.form(&request)
        guard let session = session(request), let token = form["_csrf"], SessionStore.sameToken(token, session.csrf) else { return nil }
        return (session, form)
    }

    static func forbidden() -> Response {
        html(Self.render("message", ["heading": "Refused", "text": "This form has expired or did not come from this console. Go back, reload the page and try again.", "back": "/"], title: "Refused", session: nil), status: .forbidden)
    }

    static func redirect(_ location: String, cookie: String? = nil) -> Response {
        var headers: HTTPFields = [.location: location]
        if let cookie { headers[.setCookie] = cookie }
        return Response(status: .seeOther, headers: headers)
    }

    static func html(_ text: String, status: HTTPResponse.Status = .ok, cookie: String? = nil) -> Response {
        var headers: HTTPFields = [.contentType: "text/html; charset=utf-8"]
        if let cookie { headers[.setCookie] = cookie }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "max-age=3600"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// A page inside the layout, with the navigation the session's role may use.
    static func render(_ template: String, _ values: [String: Any], title: String, session: ConsoleSession?, current: String = "", error: String? = nil, notice: String? = nil) -> String {
        var values = values
        values["csrf"] = session?.csrf ?? ""
        let body = Templates.library.render(values, withTemplate: template) ?? ""
        var layout: [String: Any] = ["title": title, "body": body, "csrf": session?.csrf ?? ""]
        if let error { layout["error"] = error }
        if let notice { layout["notice"] = notice }
        var nav: [[String: Any]] = []
        switch session?.subject {
        case .operator(let identity):
            layout["signedIn"] = true
            layout["who"] = "\(identity.key.name) (\(identity.key.role.description.lowercased()), tenant \(identity.key.tenantId))"
            let items: [(String, String, WireMethodInfo)] = [
                ("/licenses", "Licenses", IssuanceMethods.listLicenses.info), ("/catalogue", "Products", IssuanceMethods.listProducts.info),
                ("/customers", "Customers", IssuanceMethods.listCustomers.info), ("/alerts", "Alerts", UsageMethods.listAlerts.info),
                ("/reports", "Reports", ReportingMethods.usageReport.info), ("/webhooks", "Webhooks", IntegrationsMethods.listDeliveries.info),
            ]
            for (href, label, method) in items where identity.may(method) { nav.append(["href": href, "label": label, "current": href == current]) }
        case .holder:
            layout["signedIn"] = true
            layout["who"] = "License holder"
            nav.append(["href": "/my", "label": "My licenses", "current": current == "/my"])
        default:
            break
        }
        layout["nav"] = nav
        layout["hasNav"] = !nav.isEmpty
        return Templates.library.render(layout, withTemplate: "layout") ?? ""
    }
}

/// Headers every answer carries: no inline script or style, no framing, no caching of
/// pages that hold personal data, no referrer leaking a link's token.
struct SecurityHeaders: RouterMiddleware {
    typealias Context = ConsoleContext
    static let policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[HTTPField.Name("Content-Security-Policy")!] = Self.policy
        response.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }
}

/// Drops expired sessions every minute.
struct SessionSweeper: Service {
    let sessions: SessionStore

    func run() async throws {
        await Periodically.run(every: .seconds(60)) { sessions.sweep() }
    }
}

extension ConsoleService: LicenseManagerService {
    public static let name = "console"
    public static var databaseSchema: DatabaseMigrator? { nil }
}
