import CSQLiteTuning
import Foundation
import GRDB
import NIOCore
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Checkpoints a database's write-ahead log off the writer, and keeps the log from growing
/// without bound.
///
/// SQLite checkpoints automatically inside the commit that crosses 1,000 pages, so now and
/// then one write waits tens of milliseconds for pages to be copied and synced. This turns
/// that off and checkpoints from a connection of its own every `interval` instead: a
/// passive checkpoint runs alongside the writer. Passive checkpoints cannot copy frames a
/// reader's snapshot still needs, nor start the log over while any reader uses it, and
/// with look-ups arriving all the time some reader always does: when the log holds more
/// than `threshold` bytes, this asks the look-up connections for fresh snapshots and runs
/// a restarting checkpoint, which waits (briefly) for the older snapshots to end; writing
/// then starts over at the head of the file, and `journal_size_limit` cuts it back.
public final class WALMaintenance: Service, Sendable {
    private let checkpointer: DatabaseQueue
    private let lookups: LookupConnections?
    private let interval: Duration
    private let threshold: Int
    private let logger: Logger

    public init(
        pool: DatabasePool, lookups: LookupConnections? = nil, interval: Duration = .milliseconds(250), threshold: Int = 32 << 20,
        logger: Logger
    ) throws {
        var configuration = Configuration()
        // A restart holds the writer while it waits for old snapshots (they end within
        // milliseconds): give up soon and try again next round rather than stall writes.
        configuration.busyMode = .timeout(0.5)
        // Checkpoints copy from the log to the file; they need no page cache to speak of.
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -64") }
        self.checkpointer = try DatabaseQueue(path: pool.path, configuration: configuration)
        self.lookups = lookups
        self.interval = interval
        self.threshold = threshold
        self.logger = logger
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
    }

    public func run() async throws {
        // A last round after the stop leaves the log checkpointed for the next start.
        await Periodically.run(every: interval, first: false, last: true) { await maintain() }
    }

    /// One round: a passive checkpoint, and a restart when the log has grown past the threshold.
    public func maintain() async {
        do {
            if try await logBytes() > threshold { await restart() }
        } catch {
            logger.notice("checkpoint failed", metadata: ["error": "\(error)"])
        }
    }

    /// Bytes of changes in the log, after a passive checkpoint has copied what it can.
    public func logBytes() async throws -> Int {
        try await checkpointer.writeWithoutTransaction { db in
            let frames = try db.checkpoint(.passive).walFrameCount
            let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
            return max(0, frames) * pageSize
        }
    }

    /// Copies the whole log into the database; the next write starts the log over.
    public func restart() async {
        lookups?.renewSnapshots()
        do {
            let (frames, copied) = try await checkpointer.writeWithoutTransaction { db in try db.checkpoint(.restart) }
            logger.debug("checkpoint", metadata: ["frames": "\(frames)", "copied": "\(copied)"])
        } catch {
            // A reader held on past the busy timeout: the next round tries again.
            logger.notice("checkpoint could not finish; will retry", metadata: ["error": "\(error)"])
        }
    }
}
