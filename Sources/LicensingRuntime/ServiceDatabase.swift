import Foundation
import GRDB

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

    public static func open(
        path: String,
        durability: Durability,
        migrator: DatabaseMigrator
    ) throws -> DatabasePool {
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

    /// A second, read-only pool on the same file for look-ups made synchronously on an
    /// event-loop thread. It must be separate: the main pool's async readers give their
    /// connection back only after resuming on the caller's executor — which can be that
    /// same event loop, blocked waiting for a connection — a deadlock.
    public static func openLookups(path: String, readers: Int = 2) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.maximumReaderCount = readers
        configuration.busyMode = .timeout(5)
        return try DatabasePool(path: path, configuration: configuration)
    }
}
