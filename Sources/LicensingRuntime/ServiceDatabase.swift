import CSQLiteTuning
import Foundation
import GRDB
import LicensingRPC
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
        secureDelete: Bool = false,
        cacheKiB: (writer: Int, reader: Int) = (1024, 512)
    ) throws -> DatabasePool {
        Self.tuned
        DatabaseFolders.add(path)
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
            try db.execute(sql: "PRAGMA cache_size = -\(db.configuration.readonly ? cacheKiB.reader : cacheKiB.writer)")
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
        // A newer version's database is not opened by an older one (a rollback): its rows
        // may mean what this version does not know.
        let unknown = try pool.read { db in try migrator.appliedIdentifiers(db).subtracting(migrator.migrations) }
        if !unknown.isEmpty {
            throw RPCError.failedPrecondition(
                "\(path) was written by a newer version of this service (migrations this version does not know: \(unknown.sorted().joined(separator: ", "))); run that version, or restore a backup made before the upgrade")
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
