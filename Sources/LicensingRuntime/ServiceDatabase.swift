import CSQLiteTuning
import Foundation
import GRDB
import NIOConcurrencyHelpers
import NIOCore
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Opens a service's own SQLite database: WAL (through `DatabasePool`: one writer,
/// concurrent readers), foreign keys on, and the durability the service's writes need.
public enum ServiceDatabase {
    public enum Durability: String, Sendable {
        /// Every commit is on disk before it returns: licenses, revocations, activations.
        case full = "FULL"
        /// WAL with `synchronous=NORMAL`: commits survive a process crash, and may lose the
        /// last transactions on power loss. For data rebuilt from a feed.
        case normal = "NORMAL"
    }

    /// Process-wide SQLite settings, made once before the first connection opens: without
    /// memory statistics SQLite takes no global mutex per allocation (event loops reading
    /// at once contended on it).
    private static let tuned: Void = {
        _ = lm_sqlite_disable_memory_statistics()
    }()

    public static func open(
        path: String,
        durability: Durability,
        migrator: DatabaseMigrator,
        secureDelete: Bool = false
    ) throws -> DatabasePool {
        Self.tuned
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(5)
        // Few readers, and small page caches (memory is per connection): the hot reads go
        // through the look-up connections, the writer mostly appends.
        configuration.maximumReaderCount = 3
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA cache_size = \(db.configuration.readonly ? -512 : -1024)")
            if secureDelete { try db.execute(sql: "PRAGMA secure_delete = ON") }
        }
        let pool = try DatabasePool(path: path, configuration: configuration)
        // Set on the pool's single writer connection, after GRDB has switched it to WAL
        // (which sets synchronous=NORMAL, overriding anything done in prepareDatabase).
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)")
            // A log started over (see WALMaintenance) is cut back to this size.
            try db.execute(sql: "PRAGMA journal_size_limit = \(64 << 20)")
        }
        try migrator.migrate(pool)
        return pool
    }

    /// Read-only connections on `pool`'s file for look-ups made synchronously on an
    /// event-loop thread (see ``LookupConnections``); `tables` are those the look-ups read.
    public static func openLookups(for pool: DatabasePool, reading tables: Set<String>) throws -> LookupConnections {
        Self.tuned
        return try LookupConnections(pool: pool, tables: tables)
    }
}

/// Read-only connections for synchronous look-ups: one per event-loop thread, so a
/// look-up on a loop never waits for a connection another thread holds; callers off the
/// loops share a small pool. They are separate from the service's main pool on purpose:
/// its async readers give a connection back only after resuming on the caller's executor,
/// which can be an event loop blocked waiting for that connection.
///
/// A loop's connection keeps one read transaction open across look-ups instead of starting
/// one per statement (each start and end takes WAL locks, and those are shared between the
/// loops). It starts a fresh one as soon as a commit has changed a table the look-ups read,
/// so every look-up sees every commit that returned before it, and at least every 10 ms, so
/// an old snapshot never holds back a checkpoint for long (see ``WALMaintenance``).
public final class LookupConnections: Sendable {
    private let path: String
    private let perThread = ThreadSpecificVariable<LoopConnection>()
    private let pool: DatabasePool
    private let changes: TableChanges

    init(pool writer: DatabasePool, tables: Set<String>) throws {
        self.path = writer.path
        self.pool = try DatabasePool(path: writer.path, configuration: Self.configuration(readers: 2))
        self.changes = TableChanges(tables: tables)
        writer.add(transactionObserver: changes, extent: .databaseLifetime)
    }

    /// `cacheKiB`: SQLite's page cache per connection; the off-loop pool is rarely used.
    private static func configuration(readers: Int, cacheKiB: Int = 512) -> Configuration {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.maximumReaderCount = readers
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -\(cacheKiB)") }
        return configuration
    }

    /// Makes every loop's next look-up start a fresh snapshot: a checkpoint is waiting for
    /// the old ones to end.
    public func renewSnapshots() {
        changes.bump()
    }

    /// Runs `body` in a read transaction on this thread's connection.
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            return try pool.read(body)
        }
        let connection: LoopConnection
        if let existing = perThread.currentValue {
            connection = existing
        } else {
            var configuration = Self.configuration(readers: 1, cacheKiB: 768)
            configuration.allowsUnsafeTransactions = true
            connection = LoopConnection(queue: try DatabaseQueue(path: path, configuration: configuration), eventLoop: loop)
            perThread.currentValue = connection
        }
        return try connection.read(generation: changes.generation, body)
    }
}

/// One event-loop thread's connection and the snapshot it holds.
private final class LoopConnection: @unchecked Sendable {
    // @unchecked: used only on its event loop's thread (it lives in a thread-specific
    // variable, and its timer runs on the same loop).
    private static let maximumSnapshotAge: Duration = .milliseconds(10)
    private let queue: DatabaseQueue
    private let eventLoop: any EventLoop
    private var generation: UInt64 = .max
    private var snapshotStarted = ContinuousClock.now
    private var expiryScheduled = false

    init(queue: DatabaseQueue, eventLoop: any EventLoop) {
        self.queue = queue
        self.eventLoop = eventLoop
    }

    func read<T>(generation current: UInt64, _ body: (Database) throws -> T) throws -> T {
        try queue.inDatabase { db in
            let now = ContinuousClock.now
            if current != generation || now - snapshotStarted > Self.maximumSnapshotAge || !db.isInsideTransaction {
                if db.isInsideTransaction { try db.commit() }
                // The generation was read before this transaction starts, so its snapshot
                // holds at least every commit that generation counts.
                try db.beginTransaction(.deferred)
                generation = current
                snapshotStarted = now
                scheduleExpiry()
            }
            return try body(db)
        }
    }

    /// A loop that stops looking up must not keep its snapshot: it would hold back every
    /// checkpoint. The snapshot ends at most one age limit after it started.
    private func scheduleExpiry() {
        guard !expiryScheduled else { return }
        expiryScheduled = true
        eventLoop.scheduleTask(in: TimeAmount(Self.maximumSnapshotAge)) {
            self.expiryScheduled = false
            let open: Bool = (try? self.queue.inDatabase { db in
                guard db.isInsideTransaction else { return false }
                guard ContinuousClock.now - self.snapshotStarted >= Self.maximumSnapshotAge else { return true }
                try db.commit()
                return false
            }) ?? false
            if open { self.scheduleExpiry() }
        }
    }
}

/// Counts the commits that changed any of some tables.
private final class TableChanges: TransactionObserver, Sendable {
    private let tables: Set<String>
    private let commits = Atomic<UInt64>(0)
    private let changedInTransaction = Atomic<Bool>(false)

    init(tables: Set<String>) {
        self.tables = tables
    }

    var generation: UInt64 { commits.load(ordering: .acquiring) }

    func bump() {
        commits.add(1, ordering: .releasing)
    }

    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool {
        tables.contains(eventKind.tableName)
    }

    func databaseDidChange(with event: DatabaseEvent) {
        changedInTransaction.store(true, ordering: .relaxed)
        // One change is enough to know: no callback for every other row of the transaction.
        stopObservingDatabaseChangesUntilNextTransaction()
    }

    func databaseDidCommit(_ db: Database) {
        if changedInTransaction.exchange(false, ordering: .relaxed) {
            commits.add(1, ordering: .releasing)
        }
    }

    func databaseDidRollback(_ db: Database) {
        changedInTransaction.store(false, ordering: .relaxed)
    }
}

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
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            await maintain()
        }
        await maintain()
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
