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

/// license-integrations: the HTTP edge to third-party systems. Serves inbound signed
/// webhooks (billing in Stripe's format; CRM and ERP in the generic one) and turns them
/// into calls to issuance; follows issuance's, validation's and usage's feeds into a
/// durable outbox and delivers it as signed webhooks to each tenant's endpoints. Its RPCs,
/// reached through the gateway, manage endpoints, deliveries, price mappings and secrets.
public final class IntegrationsService: IntegrationsServiceProtocol {
    let database: DatabasePool
    let issuance: RPCClient
    let clock: any LicenseClock
    let logger: Logger
    let options: Options
    let inbound: Inbound
    let deliverer: Deliverer
    let reminders: Reminders
    let keyMails: KeyMails
    let followers: [any Service & Sendable]
    let positions: @Sendable () -> [FeedPosition]
    private let boundHTTP = SharedValue<SocketAddress?>(nil)

    public struct Options: Sendable {
        /// host:port of the HTTP listener (port 0: any free port).
        public var httpHost = "127.0.0.1"
        public var httpPort = 7401
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Seconds before the first retry of a failed delivery; doubles each time.
        public var retryBaseSeconds: Int64 = 30
        public var maxAttempts = 12
        /// An endpoint failing this long is disabled.
        public var disableAfterSeconds: Int64 = 86400
        public var deliveryTimeoutSeconds: Int64 = 10
        /// Deliveries to loopback and private addresses (tests; never production).
        public var allowPrivateAddresses = false
        public var deliveryInterval: Duration = .seconds(1)
        public var followInterval: Duration = .milliseconds(500)
        /// Where reminders are sent from; nil: no e-mail.
        public var smtp: SMTPMailer.Settings?
        /// Days before expiry a reminder goes out, unless a policy says otherwise.
        public var reminderDays = [30, 7, 1]
        /// The renewal link, unless a policy has its own; "{license_id}" is replaced.
        public var renewalURL = "https://example.com/renew?license={license_id}"
        public var reminderInterval: Duration = .seconds(60)
        /// The console's address: a buyer's key-reveal link points there.
        public var consoleURL = "https://127.0.0.1:7402"
        public var keyMailInterval: Duration = .seconds(2)

        public init() {}

        public init(settings: Settings, developmentMode: Bool) throws {
            self.init()
            let listen = settings["http-listen"] ?? "127.0.0.1:7401"
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
                throw RPCError.invalidArgument("http-listen must be host:port, not \(listen)")
            }
            httpHost = String(listen[..<colon])
            httpPort = port
            tlsCertificate = settings["tls-cert"]
            tlsKey = settings["tls-key"]
            if tlsCertificate == nil || tlsKey == nil {
                guard try settings.bool("allow-plaintext-http", default: developmentMode) else {
                    throw RPCError.invalidArgument(
                        "the webhook listener needs TLS: set tls-cert and tls-key (or allow-plaintext-http = true behind a TLS proxy or for a local test setup)")
                }
            }
            retryBaseSeconds = Int64(try settings.int("webhook-retry-base-seconds", default: Int(retryBaseSeconds), in: 1...86400))
            maxAttempts = try settings.int("webhook-max-attempts", default: maxAttempts, in: 1...100)
            disableAfterSeconds = Int64(try settings.int("webhook-disable-after-seconds", default: Int(disableAfterSeconds), in: 60...30 * 86400))
            deliveryTimeoutSeconds = Int64(try settings.int("webhook-timeout-seconds", default: Int(deliveryTimeoutSeconds), in: 1...120))
            allowPrivateAddresses = try settings.bool("webhook-allow-private-addresses", default: false)
            if let host = settings["smtp-host"] {
                guard let from = settings["smtp-from"], from.contains("@") else {
                    throw RPCError.invalidArgument("smtp-from (the sender's address) is required with smtp-host")
                }
                smtp = SMTPMailer.Settings(
                    host: host, port: try settings.int("smtp-port", default: 25, in: 1...65535), startTLS: try settings.bool("smtp-starttls", default: false),
                    user: settings["smtp-user"], password: settings["smtp-password"], from: from, ca: settings["smtp-ca"])
            }
            if let days = settings["reminder-days"] {
                let parsed = days.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard !parsed.isEmpty, parsed.count <= 10, parsed.allSatisfy({ (1...365).contains($0) }) else {
                    throw RPCError.invalidArgument("reminder-days is a comma-separated list of days before expiry, each 1 to 365 (e.g. 30,7,1)")
                }
                reminderDays = parsed
            }
            renewalURL = settings["renewal-url"] ?? renewalURL
            reminderInterval = .seconds(try settings.int("reminder-interval-seconds", default: 60, in: 1...86400))
            if let url = settings["console-url"] {
                guard url.count <= 300, let parsed = URL(string: url), parsed.scheme == "https" || parsed.scheme == "http", parsed.host != nil else {
                    throw RPCError.invalidArgument("console-url must be the console's http(s) address, e.g. https://licenses.example.com")
                }
                consoleURL = url
            }
        }
    }

    public init(
        database: DatabasePool, issuance: RPCClient, validation: RPCClient, usage: RPCClient, clock: any LicenseClock = SystemLicenseClock(),
        options: Options = Options(), logger: Logger
    ) {
        self.database = database
        self.issuance = issuance
        self.clock = clock
        self.logger = logger
        self.options = options
        self.inbound = Inbound(database: database, issuance: issuance, clock: clock, logger: logger)
        self.deliverer = Deliverer(
            database: database,
            options: Deliverer.Options(
                retryBase: options.retryBaseSeconds, maxAttempts: options.maxAttempts, disableAfter: options.disableAfterSeconds,
                timeout: options.deliveryTimeoutSeconds, interval: options.deliveryInterval, allowPrivateAddresses: options.allowPrivateAddresses),
            clock: clock, logger: logger)
        self.reminders = Reminders(
            database: database, issuance: issuance, mailer: options.smtp.map { SMTPMailer(settings: $0) },
            options: Reminders.Options(days: options.reminderDays, renewalURL: options.renewalURL, interval: options.reminderInterval),
            clock: clock, logger: logger)
        self.keyMails = KeyMails(
            database: database, issuance: issuance, mailer: options.smtp.map { SMTPMailer(settings: $0) }, consoleURL: options.consoleURL,
            interval: options.keyMailInterval, clock: clock, logger: logger)
        let interval = options.followInterval
        // After a restore of issuance (a new epoch), its history up to where this service had
        // followed the old epoch is applied again for what it remembers of licenses, but not
        // sent again (receivers had it); what it had not reached yet is sent.
        let epochStart = SharedValue<UInt64>(0)
        let issuanceFeed = FeedFollower<ChangeEvent>(feed: "issuance", database: database, idleInterval: interval, logger: logger) { after in
            let response = try await issuance.call(IssuanceMethods.changes, ChangesRequest(afterSeq: after, limit: 1000), timeout: .seconds(10))
            epochStart.withLock { $0 = response.epochSinceSeq }
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.events.last?.seq ?? after, epoch: response.epoch)
        } apply: { events, cursor, restart in
            let restoredAt = epochStart.withLock { $0 }
            try await database.write { db in
                if restart {
                    let reached = try FeedCursor.load(feed: "issuance", in: db).appliedSeq
                    try FeedCursor(appliedSeq: min(reached, restoredAt), epoch: cursor.epoch).store(feed: "issuance-history", in: db)
                }
                let history = try FeedCursor.load(feed: "issuance-history", in: db)
                try Outbox.apply(
                    issuance: events, epoch: cursor.epoch, silentThrough: history.epoch == cursor.epoch ? history.appliedSeq : 0, now: clock.now, in: db)
                try cursor.store(feed: "issuance", in: db)
            }
        }
        let validationFeed = FeedFollower<ValidationEvent>(feed: "validation", database: database, idleInterval: interval, logger: logger) { after in
            let response = try await validation.call(ValidationMethods.events, FeedRequest(afterSeq: after, limit: 1000, kinds: ["machine"]), timeout: .seconds(10))
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
        } apply: { events, cursor, _ in
            try await database.write { db in
                try Outbox.write(Outbox.events(validation: events), now: clock.now, in: db)
                try cursor.store(feed: "validation", in: db)
            }
        }
        let usageFeed = FeedFollower<UsageFeedEvent>(feed: "usage", database: database, idleInterval: interval, logger: logger) { after in
            let response = try await usage.call(UsageMethods.feed, FeedRequest(afterSeq: after, limit: 1000, kinds: ["alert"]), timeout: .seconds(10))
            return FeedPage(events: response.events, lastSeq: response.lastSeq, nextAfter: response.nextAfterSeq, epoch: response.epoch)
        } apply: { events, cursor, _ in
            try await database.write { db in
                let events = try Outbox.events(usage: events) { id in
                    try Bool.fetchOne(db, sql: "SELECT 1 FROM outbox WHERE event_id = ?", arguments: [id]) ?? false
                }
                try Outbox.write(events, now: clock.now, in: db)
                try cursor.store(feed: "usage", in: db)
            }
        }
        self.followers = [issuanceFeed, validationFeed, usageFeed]
        self.positions = { [issuanceFeed.position(), validationFeed.position(), usageFeed.position()] }
    }

    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .full, migrator: IntegrationsSchema.migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        func client(_ name: String) throws -> RPCClient { try environment.peerClient(name) }
        let service = IntegrationsService(
            database: try openDatabase(path: environment.databasePath), issuance: try client("issuance"), validation: try client("validation"),
            usage: try client("usage"), options: try Options(settings: settings, developmentMode: environment.developmentMode), logger: environment.logger)
        return try service.services(configuration: try environment.serverConfiguration)
    }

    /// The RPC server, the HTTP listener, the followers, the deliverer and the checkpoints;
    /// stopped in reverse order.
    public func services(configuration: RPCServerConfiguration) throws -> [any Service] {
        [try WALMaintenance(pool: database, logger: logger), deliverer, reminders, keyMails] + followers.map { $0 as any Service }
            + [try httpApplication(), RPCServer(router: router(), configuration: configuration, logger: logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        let positions = self.positions
        let database = self.database
        let clock = self.clock
        HealthReporter(service: "integrations", feeds: { positions() }, problems: {
            (try? await Self.problems(database: database, now: clock.now)) ?? ["the integrations database cannot be read"]
        }).register(in: &router)
        DatabaseSnapshot(service: "integrations", database: database).register(in: &router)
        registerMethods(with: &router)
        return router
    }

    /// What health reports as degraded: reminders failing for licenses ending about now,
    /// buyers' e-mails failing in the last day, disabled endpoints.
    static func problems(database: DatabasePool, now: Int64) async throws -> [String] {
        try await database.read { db in
            var problems: [String] = []
            let since = now - 86400
            if let row = try Row.fetchOne(
                db, sql: "SELECT COUNT(*) AS n, MAX(error) AS error FROM reminder WHERE status = 'failed' AND expires_at >= ?", arguments: [now - 30 * 86400]),
                (row["n"] as Int) > 0
            {
                problems.append("\(row["n"] as Int) renewal reminder(s) could not be sent: \((row["error"] as String?) ?? "")")
            }
            if let row = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS n, MAX(error) AS error FROM key_mail WHERE status != 'sent' AND attempts > 0 AND created_at >= ?", arguments: [since]),
                (row["n"] as Int) > 0
            {
                problems.append("\(row["n"] as Int) key-reveal e-mail(s) to buyers could not be sent: \((row["error"] as String?) ?? "")")
            }
            let disabled = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM webhook_endpoint WHERE disabled_reason != '' AND deleted = 0") ?? 0
            if disabled > 0 { problems.append("\(disabled) webhook endpoint(s) disabled after failing for a day: licensectl webhook list") }
            return problems
        }
    }

    /// Where the HTTP listener is bound, once it is (tests bind port 0).
    public var httpAddress: SocketAddress? { boundHTTP.withLock { $0 } }

    /// The inbound webhook listener: `POST /webhooks/<source>/<tenant>`.
    func httpApplication() throws -> some Service {
        let router = Router()
        let inbound = self.inbound
        let logger = self.logger
        router.post("/webhooks/:source/:tenant") { request, context -> Response in
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: Inbound.maxBody)
            } catch {
                return Self.answer(Inbound.Answer(status: 413, message: "the body is larger than 1 MiB"))
            }
            let source = context.parameters.get("source") ?? ""
            let header = source == "stripe" ? "Stripe-Signature" : "LM-Signature"
            let answer = await inbound.handle(
                source: source, tenant: context.parameters.get("tenant") ?? "", signature: request.headers[HTTPField.Name(header)!],
                body: Array(buffer: body))
            logger.info("webhook", metadata: ["source": "\(source)", "status": "\(answer.status)", "answer": "\(answer.message)"])
            return Self.answer(answer)
        }
        router.get("/health") { _, _ -> Response in Self.answer(Inbound.Answer(status: 200, message: "ok")) }
        let bound = boundHTTP
        let server: HTTPServerBuilder
        if let certificate = options.tlsCertificate, let key = options.tlsKey {
            server = try .tls(.http1(), tlsConfiguration: RPCTLS.serverConfiguration(certificateChain: certificate, privateKey: key))
        } else {
            server = .http1()
        }
        return Application(
            router: router, server: server,
            configuration: ApplicationConfiguration(address: .hostname(options.httpHost, port: options.httpPort), serverName: "license-integrations"),
            onServerRunning: { channel in
                bound.withLock { $0 = channel.localAddress }
                logger.info("webhook listener ready", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: logger)
    }

    static func answer(_ answer: Inbound.Answer) -> Response {
        let body: [String: Any] = answer.status < 300 ? ["ok": true, "message": answer.message] : ["error": answer.message]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Response(
            status: HTTPResponse.Status(code: answer.status), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    func tenant(_ call: ServerCall) -> String { call.metadata[RPCMetadata.tenant] ?? "default" }
}

extension IntegrationsService: LicenseManagerService {
    public static let name = "integrations"
    public static var databaseSchema: DatabaseMigrator? { IntegrationsSchema.migrator }
}
