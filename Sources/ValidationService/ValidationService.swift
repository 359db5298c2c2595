import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-validation: answers validations from its own replica of the license facts,
/// so it keeps answering while issuance is down.
public final class ValidationService: Sendable {
    let replica: LicenseReplica
    let feed: FeedConsumer
    let keyHashSecret: KeyHashSecret
    let clock: any LicenseClock
    let logger: Logger

    public init(
        database: DatabasePool, issuance: RPCClient, keyHashSecret: KeyHashSecret,
        clock: any LicenseClock = SystemLicenseClock(), feedPollInterval: Duration = .milliseconds(200), logger: Logger
    ) {
        self.replica = LicenseReplica(database: database)
        self.feed = FeedConsumer(client: issuance, replica: replica, logger: logger, idleInterval: feedPollInterval)
        self.keyHashSecret = keyHashSecret
        self.clock = clock
        self.logger = logger
    }

    /// The replica is rebuilt from the feed if lost, so `synchronous=NORMAL` is enough.
    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .normal, migrator: ValidationSchema.migrator)
    }

    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let settings = environment.settings
        let issuance = RPCClient(endpoint: try settings.endpoint("issuance", default: settings.defaultSocket("issuance")))
        let service = ValidationService(
            database: try openDatabase(path: environment.databasePath), issuance: issuance,
            keyHashSecret: try Secrets.keyHashSecret(settings: settings, developmentMode: environment.developmentMode),
            logger: environment.logger)
        return service.services(configuration: try environment.serverConfiguration)
    }

    /// The RPC server and the feed consumer.
    public func services(configuration: RPCServerConfiguration) -> [any Service] {
        [RPCServer(router: router(), configuration: configuration, logger: logger), feed]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        let feed = self.feed
        HealthReporter(service: "validation", feeds: { [feed.position()] }).register(in: &router)
        router.register(ValidationMethods.validate) { try await self.validate($0, $1) }
        return router
    }

    func validate(_ request: ValidateRequest, _ call: ServerCall) async throws -> ValidateResponse {
        let now = clock.now
        let key: LicenseKey
        do {
            key = try LicenseKey(parsing: request.licenseKey)
        } catch {
            return ValidateResponse(reason: .malformedKey, valid: false, serverTime: now, detail: "\(error)")
        }
        let keyHash = key.hash(secret: keyHashSecret)
        var facts = try await replica.facts(keyHash: keyHash)
        if facts == nil {
            // Perhaps issued a moment ago: catch up with the feed once before saying NOT_FOUND.
            await feed.catchUp()
            facts = try await replica.facts(keyHash: keyHash)
        }
        let decision = LicenseDecider.decide(facts, ValidationQuery(feature: request.feature, region: request.region), now: now)
        return ValidateResponse(
            reason: decision.reason, valid: decision.allows, licenseId: facts?.licenseID ?? "", state: decision.state,
            expiresAt: facts?.expiresAt ?? 0, graceEndsAt: facts?.graceEndsAt ?? 0,
            features: decision.allows ? facts?.features ?? [] : [], serverTime: now, detail: decision.detail)
    }
}
