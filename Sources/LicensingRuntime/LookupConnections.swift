import CSQLiteTuning
import Foundation
import GRDB
import NIOCore
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

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
