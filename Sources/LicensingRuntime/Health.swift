import LicensingRPC
import LicensingWire

/// Answers `licensing.v1.Health/Check` for a service.
public struct HealthReporter: Sendable {
    public let service: String
    public let version: String
    private let started: ContinuousClock.Instant
    private let feeds: @Sendable () async -> [FeedPosition]
    private let problems: @Sendable () async -> [String]

    /// `problems`: what is wrong without stopping the service; any makes the status DEGRADED.
    public init(
        service: String, version: String = LicenseManager.version, feeds: @escaping @Sendable () async -> [FeedPosition] = { [] },
        problems: @escaping @Sendable () async -> [String] = { [] }
    ) {
        self.service = service
        self.version = version
        self.started = .now
        self.feeds = feeds
        self.problems = problems
    }

    public func check() async -> HealthCheckResponse {
        let problems = await problems()
        return HealthCheckResponse(
            service: service,
            status: problems.isEmpty ? .serving : .degraded,
            version: version,
            uptimeSeconds: (ContinuousClock.now - started).components.seconds,
            feeds: await feeds(), problems: problems)
    }

    public func register(in router: inout RPCRouter) {
        let reporter = self
        router.register(HealthMethods.check) { _, _ in await reporter.check() }
    }
}

public enum LicenseManager {
    public static let version = "0.1.0"
}
