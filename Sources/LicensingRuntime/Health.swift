import LicensingRPC
import LicensingWire

/// Answers `licensing.v1.Health/Check` for a service.
public struct HealthReporter: Sendable {
    public let service: String
    public let version: String
    private let started: ContinuousClock.Instant
    private let feeds: @Sendable () async -> [FeedPosition]

    public init(service: String, version: String = LicenseManager.version, feeds: @escaping @Sendable () async -> [FeedPosition] = { [] }) {
        self.service = service
        self.version = version
        self.started = .now
        self.feeds = feeds
    }

    public func check() async -> HealthCheckResponse {
        HealthCheckResponse(
            service: service,
            status: .serving,
            version: version,
            uptimeSeconds: (ContinuousClock.now - started).components.seconds,
            feeds: await feeds())
    }

    public func register(in router: inout RPCRouter) {
        let reporter = self
        router.register(HealthMethods.check) { _, _ in await reporter.check() }
    }
}

public enum LicenseManager {
    public static let version = "0.1.0"
}
