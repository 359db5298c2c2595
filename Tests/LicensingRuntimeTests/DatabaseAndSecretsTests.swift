import Foundation
import GRDB
import Logging
import LicensingRuntime
import NIOCore
import NIOPosix
import Testing

@Suite struct DatabaseAndSecretsTests {
    let folder = NSTemporaryDirectory() + "lm-runtime-" + UUID().uuidString

    @Test func databasesUseWALForeignKeysAndTheAskedDurability() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: "CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (parent_id INTEGER REFERENCES parent(id))")
        }
        let full = try ServiceDatabase.open(path: "\(folder)/full.sqlite", durability: .full, migrator: migrator)
        let normal = try ServiceDatabase.open(path: "\(folder)/normal.sqlite", durability: .normal, migrator: migrator)
        let journal = try full.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        let foreignKeys = try full.read { db in try Int.fetchOne(db, sql: "PRAGMA foreign_keys") }
        let fullSync = try full.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        let normalSync = try normal.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(journal == "wal")
        #expect(foreignKeys == 1)
        #expect(fullSync == 2)
        #expect(normalSync == 1)
        #expect(throws: DatabaseError.self) {
            try full.write { db in try db.execute(sql: "INSERT INTO child (parent_id) VALUES (42)") }
        }
        // Migrations are versioned: opening again applies nothing twice.
        _ = try ServiceDatabase.open(path: "\(folder)/full.sqlite", durability: .full, migrator: migrator)
        let applied = try full.read { db in try migrator.appliedIdentifiers(db) }
        #expect(applied == ["v1"])
    }

    /// Look-ups on an event loop use that loop's own read-only connection and see every
    /// commit made before them; they cannot write.
    @Test func lookUpsOnEventLoopsSeeTheLatestCommitAndCannotWrite() async throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (pool, lookups) = try factDatabase("lookups", durability: .full)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        func value(on loop: (any EventLoop)?) async throws -> String? {
            guard let loop else { return try lookups.read { db in try String.fetchOne(db, sql: "SELECT value FROM fact WHERE id = 1") } }
            return try await loop.submit { try lookups.read { db in try String.fetchOne(db, sql: "SELECT value FROM fact WHERE id = 1") } }.get()
        }
        let loops = Array(group.makeIterator())
        for round in ["first", "second", "third"] {
            try await pool.write { db in try db.execute(sql: "INSERT OR REPLACE INTO fact (id, value) VALUES (1, ?)", arguments: [round]) }
            for loop in loops + [nil] {
                #expect(try await value(on: loop) == round)
            }
        }
        await #expect(throws: DatabaseError.self) {
            try await loops[0].submit { try lookups.read { db in try db.execute(sql: "DELETE FROM fact") } }.get()
        }
        try await group.shutdownGracefully()
    }

    /// Look-ups that never stop keep a snapshot open at all times; the maintenance
    /// checkpoint still starts the write-ahead log over, and the look-ups go on seeing the data.
    @Test func aCheckpointStartsTheLogOverWhileLookUpsKeepReading() async throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (pool, lookups) = try factDatabase("wal", durability: .normal)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let reads = Array(group.makeIterator()).map { loop in
            loop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(200)) { _ in
                _ = try lookups.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM fact") }
            }
        }
        for batch in 0..<200 {
            try await pool.write { db in
                for row in 0..<20 {
                    try db.execute(sql: "INSERT INTO fact (value) VALUES (?)", arguments: [String(repeating: "x", count: 200) + "\(batch)-\(row)"])
                }
            }
        }
        let maintenance = try WALMaintenance(pool: pool, lookups: lookups, threshold: 100_000, logger: Logger(label: "test"))
        #expect(try await maintenance.logBytes() > 100_000)
        await maintenance.maintain()
        try await pool.write { db in try db.execute(sql: "INSERT INTO fact (value) VALUES ('after')") }
        #expect(try await maintenance.logBytes() < 20_000, "the log did not start over")
        let count = try await group.any().submit { try lookups.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM fact") } }.get()
        #expect(count == 4_001)
        for read in reads { read.cancel() }
        try await group.shutdownGracefully()
    }

    /// A loop that looked something up once and then went quiet gives its snapshot up
    /// on its own, or no checkpoint could ever empty the log.
    @Test func aQuietLoopDoesNotHoldTheLogBack() async throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (pool, lookups) = try factDatabase("quiet", durability: .normal)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try await pool.write { db in try db.execute(sql: "INSERT INTO fact (value) VALUES ('first')") }
        _ = try await group.any().submit { try lookups.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM fact") } }.get()
        for _ in 0..<50 {
            try await pool.write { db in try db.execute(sql: "INSERT INTO fact (value) VALUES (?)", arguments: [String(repeating: "y", count: 2000)]) }
        }
        try await Task.sleep(for: .milliseconds(50))
        // Without the look-up's help (no renewal asked for): a snapshot held on would make
        // this wait out the busy timeout and throw.
        let (frames, copied) = try await pool.writeWithoutTransaction { db in try db.checkpoint(.restart) }
        #expect(frames == copied, "log not copied: \(frames) frames, \(copied) copied")
        try await pool.write { db in try db.execute(sql: "INSERT INTO fact (value) VALUES ('after')") }
        let after = try await pool.writeWithoutTransaction { db in try db.checkpoint(.passive).walFrameCount }
        #expect(after < 5, "the log did not start over: \(after) frames")
        try await group.shutdownGracefully()
    }

    /// A database with one table, `fact`, and look-up connections that read it.
    func factDatabase(_ name: String, durability: ServiceDatabase.Durability) throws -> (DatabasePool, LookupConnections) {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in try db.execute(sql: "CREATE TABLE fact (id INTEGER PRIMARY KEY, value TEXT)") }
        let pool = try ServiceDatabase.open(path: "\(folder)/\(name).sqlite", durability: durability, migrator: migrator)
        return (pool, try ServiceDatabase.openLookups(for: pool, reading: ["fact"]))
    }

    @Test func aMissingSecretStopsTheServiceUnlessInDevelopmentMode() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let settings = Settings(values: ["data-dir": folder])
        #expect(throws: Secrets.Missing.self) { try Secrets.keyHashSecret(settings: settings, developmentMode: false) }
        _ = try Secrets.keyHashSecret(settings: settings, developmentMode: true)
        let path = "\(folder)/secrets/key-hash-secret"
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let first = try String(contentsOfFile: path, encoding: .utf8)
        // The next start reads the same secret instead of making a new one.
        _ = try Secrets.keyHashSecret(settings: settings, developmentMode: true)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == first)
        _ = try Secrets.keyHashSecret(settings: settings, developmentMode: false)
        #expect(throws: (any Error).self) {
            try Secrets.keyHashSecret(settings: Settings(values: ["key-hash-secret": "abcd"]), developmentMode: false)
        }
    }
}
