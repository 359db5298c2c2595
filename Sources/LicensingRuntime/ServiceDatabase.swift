import CSQLiteTuning
import Foundation
import GRDB
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

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

    /// Read-only connections on the same file for look-ups made synchronously on an
    /// event-loop thread (see ``LookupConnections``).
    public static func openLookups(path: String) throws -> LookupConnections {
        Self.tuned
        return try LookupConnections(path: path)
    }
}

/// Read-only connections for synchronous look-ups: one per event-loop thread, so a
/// look-up on a loop never waits for a connection another thread holds and pays no pool
/// or transaction (one statement reads one snapshot); callers off the loops share a small
/// pool. They are separate from the service's main pool on purpose: its async readers
/// give a connection back only after resuming on the caller's executor, which can be an
/// event loop blocked waiting for that connection.
public final class LookupConnections: Sendable {
    private let path: String
    private let perLoop = NIOLockedValueBox<[ObjectIdentifier: DatabaseQueue]>([:])
    private let pool: DatabasePool

    init(path: String) throws {
        self.path = path
        self.pool = try DatabasePool(path: path, configuration: Self.configuration(readers: 2))
    }

    private static func configuration(readers: Int) -> Configuration {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.maximumReaderCount = readers
        configuration.busyMode = .timeout(5)
        return configuration
    }

    /// Runs `body` on this thread's connection. On an event loop the body sees no
    /// transaction: a look-up that must be consistent is one statement.
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            return try pool.read(body)
        }
        return try connection(for: loop).inDatabase(body)
    }

    private func connection(for loop: any EventLoop) throws -> DatabaseQueue {
        let id = ObjectIdentifier(loop)
        if let queue = perLoop.withLockedValue({ $0[id] }) { return queue }
        let queue = try DatabaseQueue(path: path, configuration: Self.configuration(readers: 1))
        return perLoop.withLockedValue { connections in
            if let existing = connections[id] { return existing }
            connections[id] = queue
            return queue
        }
    }
}
