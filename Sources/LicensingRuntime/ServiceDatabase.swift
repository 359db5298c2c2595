import CSQLiteTuning
import Foundation
import GRDB
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
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
        migrator: DatabaseMigrator
    ) throws -> DatabasePool {
        Self.tuned
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(5)
        // Few readers: each keeps its own page cache, and two event loops do the hot reads.
        configuration.maximumReaderCount = 3
        let pool = try DatabasePool(path: path, configuration: configuration)
        // Set on the pool's single writer connection, after GRDB has switched it to WAL
        // (which sets synchronous=NORMAL, overriding anything done in prepareDatabase).
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)")
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
/// so every look-up sees every commit that returned before it, and at least every 50 ms, so
/// an old snapshot never holds the WAL back from being checkpointed.
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

    private static func configuration(readers: Int) -> Configuration {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.maximumReaderCount = readers
        configuration.busyMode = .timeout(5)
        return configuration
    }

    /// Runs `body` in a read transaction on this thread's connection.
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        guard MultiThreadedEventLoopGroup.currentEventLoop != nil else {
            return try pool.read(body)
        }
        let connection: LoopConnection
        if let existing = perThread.currentValue {
            connection = existing
        } else {
            var configuration = Self.configuration(readers: 1)
            configuration.allowsUnsafeTransactions = true
            connection = LoopConnection(queue: try DatabaseQueue(path: path, configuration: configuration))
            perThread.currentValue = connection
        }
        return try connection.read(generation: changes.generation, body)
    }
}

/// One event-loop thread's connection and the snapshot it holds.
private final class LoopConnection: @unchecked Sendable {
    // @unchecked: used only by the thread that created it (it lives in a thread-specific variable).
    private static let maximumSnapshotAge: Duration = .milliseconds(50)
    private let queue: DatabaseQueue
    private var generation: UInt64 = .max
    private var snapshotStarted = ContinuousClock.now

    init(queue: DatabaseQueue) {
        self.queue = queue
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
            }
            return try body(db)
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
