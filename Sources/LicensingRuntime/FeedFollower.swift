import Synchronization
import GRDB
import LicensingRPC
import LicensingWire
import Logging
import Metrics
import ServiceLifecycle

/// Where a follower stands in a source's feed: the last sequence it applied and the
/// source's epoch then. Stored in the follower's `feed_position` table, in the transaction
/// that applies the events (exactly-once apply).
public struct FeedCursor: Sendable, Equatable {
    public var appliedSeq: UInt64
    public var epoch: String

    public init(appliedSeq: UInt64 = 0, epoch: String = "") {
        self.appliedSeq = appliedSeq
        self.epoch = epoch
    }

    /// The table the cursors live in; created by the follower's migration.
    public static let createTable = """
        CREATE TABLE IF NOT EXISTS feed_position (
            feed TEXT PRIMARY KEY,
            applied_seq INTEGER NOT NULL CHECK (applied_seq >= 0),
            epoch TEXT NOT NULL DEFAULT ''
        )
        """

    public static func load(feed: String, in db: Database) throws -> FeedCursor {
        guard let row = try Row.fetchOne(db, sql: "SELECT applied_seq, epoch FROM feed_position WHERE feed = ?", arguments: [feed]) else {
            return FeedCursor()
        }
        return FeedCursor(appliedSeq: UInt64(row[0] as Int64), epoch: row[1])
    }

    public func store(feed: String, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO feed_position (feed, applied_seq, epoch) VALUES (?, ?, ?)
                ON CONFLICT(feed) DO UPDATE SET applied_seq = excluded.applied_seq, epoch = excluded.epoch
                """,
            arguments: [feed, Int64(clamping: appliedSeq), epoch])
    }
}

/// One page pulled from a source's feed.
public struct FeedPage<Event: Sendable>: Sendable {
    public var events: [Event]
    public var lastSeq: UInt64
    public var nextAfter: UInt64
    public var epoch: String

    public init(events: [Event], lastSeq: UInt64, nextAfter: UInt64, epoch: String) {
        self.events = events
        self.lastSeq = lastSeq
        self.nextAfter = nextAfter
        self.epoch = epoch
    }
}

/// Follows another service's feed: pulls the events after its cursor, applies them with the
/// new cursor in one transaction, and pulls again — at once while there is more, every
/// `idleInterval` once caught up, with backoff while the source is unreachable (the
/// follower's own service goes on answering from what it has). A new epoch (the source
/// started over) starts the cursor again from 0 in that epoch.
public final class FeedFollower<Event: Sendable>: Service, Sendable {
    public typealias Pull = @Sendable (_ after: UInt64) async throws -> FeedPage<Event>
    /// Applies the events and stores `cursor` (via `FeedCursor.store`) in one transaction;
    /// `restart`: the source's epoch changed, so derived state may be reset first.
    public typealias Apply = @Sendable (_ events: [Event], _ cursor: FeedCursor, _ restart: Bool) async throws -> Void

    private let feed: String
    private let database: DatabasePool
    private let pull: Pull
    private let apply: Apply
    private let idleInterval: Duration
    private let logger: Logger
    private let state = Mutex(Progress())
    private let pulls = Mutex(Pulls())
    private let appliedGauge: Gauge
    private let lagGauge: Gauge

    struct Progress {
        var cursor: FeedCursor?
        var sourceSeq: UInt64 = 0
        var lastContact: ContinuousClock.Instant?
        /// Applied through the head the source reported, at least once since the start.
        var caughtUp = false
    }

    /// One pull at a time, shared by the run loop and catch-ups (two at once could store an
    /// older cursor after a newer one): how many started and finished, and the one running.
    private struct Pulls {
        var started = 0
        var completed = 0
        var running: Task<Bool, any Error>?
    }

    /// `feed`: the name the cursor is stored under and metrics and health show.
    public init(feed: String, database: DatabasePool, idleInterval: Duration = .milliseconds(500), logger: Logger, pull: @escaping Pull, apply: @escaping Apply) {
        self.feed = feed
        self.database = database
        self.pull = pull
        self.apply = apply
        self.idleInterval = idleInterval
        self.logger = logger
        self.appliedGauge = Gauge(label: "feed_applied_seq", dimensions: [("feed", feed)])
        self.lagGauge = Gauge(label: "feed_lag_events", dimensions: [("feed", feed)])
    }

    public func run() async throws {
        var failures = 0
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                let more = try await pollOnce()
                if failures > 0 {
                    logger.info("feed reachable again", metadata: ["feed": "\(feed)"])
                    failures = 0
                }
                if more { continue }
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.idleInterval) }
            } catch {
                failures += 1
                if failures == 1 {
                    logger.warning("feed unreachable; going on with what was applied", metadata: ["feed": "\(feed)", "error": "\(error)"])
                }
                let backoff = min(idleInterval * (1 << min(failures, 4)), .seconds(5))
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: backoff) }
            }
        }
    }

    private func cursor() async throws -> FeedCursor {
        if let cursor = state.withLock({ $0.cursor }) { return cursor }
        let loaded = try await database.read { [feed] db in try FeedCursor.load(feed: feed, in: db) }
        state.withLock { $0.cursor = $0.cursor ?? loaded }
        return loaded
    }

    /// Pulls and applies one page, or waits for the pull already running; returns whether
    /// more is waiting.
    @discardableResult
    public func pollOnce() async throws -> Bool {
        let pull = shared()
        // A follower being stopped stops its pull (a catch-up sharing it sees it fail).
        return try await withTaskCancellationHandler { try await pull.value } onCancel: { pull.cancel() }
    }

    /// The pull running, or a new one.
    private func shared() -> Task<Bool, any Error> {
        pulls.withLock { state in
            if let running = state.running { return running }
            state.started += 1
            let generation = state.started
            // Made under the lock, so it is `running` before it can finish and clear it.
            let task = Task {
                defer {
                    self.pulls.withLock {
                        $0.completed = max($0.completed, generation)
                        $0.running = nil
                    }
                }
                return try await self.pullAndApply()
            }
            state.running = task
            return task
        }
    }

    private func pullAndApply() async throws -> Bool {
        var current = try await cursor()
        var page = try await pull(current.appliedSeq)
        var restart = false
        if !current.epoch.isEmpty, page.epoch != current.epoch {
            logger.warning("the source started a new epoch; following it from the start", metadata: [
                "feed": "\(feed)", "old_epoch": "\(current.epoch)", "new_epoch": "\(page.epoch)",
            ])
            current = FeedCursor(appliedSeq: 0, epoch: page.epoch)
            page = try await pull(0)
            restart = true
        }
        let next = FeedCursor(appliedSeq: max(page.nextAfter, restart ? 0 : current.appliedSeq), epoch: page.epoch)
        if next != current || restart {
            try await apply(page.events, next, restart)
        }
        state.withLock {
            $0.cursor = next
            $0.sourceSeq = page.lastSeq
            $0.lastContact = .now
            if next.appliedSeq >= page.lastSeq { $0.caughtUp = true }
        }
        appliedGauge.record(Int64(clamping: next.appliedSeq))
        lagGauge.record(Int64(clamping: page.lastSeq) - Int64(clamping: next.appliedSeq))
        return next.appliedSeq < page.lastSeq && next.appliedSeq > current.appliedSeq
    }

    /// Pulls now rather than at the next poll, for a caller about to deny something a
    /// change not yet applied could allow. Callers that ask meanwhile share one pull.
    public func catchUp() async {
        // A pull that started before this call may have missed what the caller looks for.
        let wanted = pulls.withLock { $0.started + 1 }
        while pulls.withLock({ $0.completed < wanted }) {
            _ = try? await shared().value
        }
    }

    /// Whether the follower has applied everything its source had, at least once since it
    /// started: a read replica takes calls only then.
    public var hasCaughtUp: Bool { state.withLock { $0.caughtUp } }

    /// For `Health`: how far this follower has applied, and how far the source has written.
    public func position() -> FeedPosition {
        state.withLock { progress in
            FeedPosition(
                feed: feed, appliedSeq: progress.cursor?.appliedSeq ?? 0, sourceSeq: progress.sourceSeq,
                secondsSinceContact: progress.lastContact.map { (ContinuousClock.now - $0).components.seconds } ?? -1)
        }
    }
}
