import Synchronization
import LicensingRPC
import LicensingWire
import Logging
import Metrics
import ServiceLifecycle

/// Pulls issuance's change feed into the replica: asks for events after the stored
/// position, applies them with the new position in one transaction, and asks again —
/// at once while there is more, every `idleInterval` once caught up. When issuance is
/// unreachable it retries with backoff while validation goes on answering from the replica.
final class FeedConsumer: Service, Sendable {
    private let client: RPCClient
    private let replica: LicenseReplica
    private let signingKeys: SigningKeyCache
    private let logger: Logger
    private let idleInterval: Duration
    private let state = Mutex(Progress())
    private let pulls = Mutex(Pulls())

    /// On-demand pulls: how many were started and finished, and the one running.
    private struct Pulls {
        var started = 0
        var completed = 0
        var running: Task<Void, Never>?
    }
    /// Staleness, for dashboards and alerts: how far the replica is behind issuance.
    private let appliedGauge = Gauge(label: "validation_feed_applied_seq")
    private let lagGauge = Gauge(label: "validation_feed_lag_events")

    struct Progress {
        var appliedSeq: UInt64 = 0
        var sourceSeq: UInt64 = 0
        var lastContact: ContinuousClock.Instant?
    }

    init(client: RPCClient, replica: LicenseReplica, signingKeys: SigningKeyCache, logger: Logger, idleInterval: Duration = .milliseconds(200)) {
        self.client = client
        self.replica = replica
        self.signingKeys = signingKeys
        self.logger = logger
        self.idleInterval = idleInterval
    }

    func run() async throws {
        let start = try await replica.position()
        state.withLock { $0.appliedSeq = start }
        var failures = 0
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                let more = try await pollOnce()
                if failures > 0 {
                    logger.info("issuance feed reachable again", metadata: ["applied_seq": "\(position().appliedSeq)"])
                    failures = 0
                }
                if more { continue }
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.idleInterval) }
            } catch {
                failures += 1
                if failures == 1 {
                    logger.warning("issuance feed unreachable; answering from the replica", metadata: ["error": "\(error)"])
                }
                let backoff = min(idleInterval * (1 << min(failures, 4)), .seconds(2))
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: backoff) }
            }
        }
    }

    /// Fetches and applies one batch; returns whether more are waiting.
    private func pollOnce() async throws -> Bool {
        let batch: UInt32 = 1000
        let after = state.withLock { $0.appliedSeq }
        let response = try await client.call(IssuanceMethods.changes, ChangesRequest(afterSeq: after, limit: batch), timeout: .seconds(5))
        let position = try await replica.apply(response.events, epoch: response.epoch)
        if position == LicenseReplica.restarted {
            logger.warning("issuance's feed started a new epoch (a restore): the replica is rebuilt from its start", metadata: ["epoch": "\(response.epoch)"])
            signingKeys.invalidate()
            state.withLock { $0.appliedSeq = 0 }
            return true
        }
        if response.events.contains(where: { if case .signingKey? = $0.subject { true } else { false } }) { signingKeys.invalidate() }
        let applied = state.withLock {
            $0.appliedSeq = max($0.appliedSeq, position)
            $0.sourceSeq = response.lastSeq
            $0.lastContact = .now
            return $0.appliedSeq
        }
        appliedGauge.record(Int64(applied))
        lagGauge.record(Int64(response.lastSeq) - Int64(applied))
        return response.events.count == Int(batch)
    }

    /// Pulls the feed now rather than at the next poll, so a key issued a moment ago is
    /// found (read-your-writes for a vendor that issues and validates at once). The caller
    /// waits for a pull that started after it asked; callers that ask meanwhile share that
    /// pull, so unknown keys cannot multiply the load on issuance.
    func catchUp() async {
        let wanted = pulls.withLock { $0.started + 1 }
        while true {
            let pull = pulls.withLock { state -> Task<Void, Never>? in
                if state.completed >= wanted { return nil }
                if let running = state.running { return running }
                state.started += 1
                let generation = state.started
                let task = Task {
                    _ = try? await self.pollOnce()
                    self.pulls.withLock {
                        $0.completed = max($0.completed, generation)
                        $0.running = nil
                    }
                }
                state.running = task
                return task
            }
            guard let pull else { return }
            await pull.value
        }
    }

    func position() -> FeedPosition {
        state.withLock { progress in
            FeedPosition(
                feed: LicenseReplica.feed, appliedSeq: progress.appliedSeq, sourceSeq: progress.sourceSeq,
                secondsSinceContact: progress.lastContact.map { (ContinuousClock.now - $0).components.seconds } ?? -1)
        }
    }
}
