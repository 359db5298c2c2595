import Foundation
import GRDB
import LicensingRuntime
import Logging
import Synchronization
import Testing

@Suite struct GroupCommitTests {
    struct Refused: Error {}

    /// Many concurrent changes commit in shared transactions; one that fails rolls back
    /// alone, and every caller learns its own outcome.
    @Test func concurrentChangesCommitTogetherAndFailAlone() async throws {
        let folder = NSTemporaryDirectory() + "lm-group-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in try db.execute(sql: "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)") }
        let pool = try ServiceDatabase.open(path: "\(folder)/group.sqlite", durability: .full, migrator: migrator)
        let committer = GroupCommitter(database: pool, maxBatch: 16)

        let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
            for index in 0..<200 {
                group.addTask {
                    do {
                        let id = try await committer.write { db -> Int64 in
                            try db.execute(sql: "INSERT INTO item (name) VALUES (?)", arguments: ["item \(index)"])
                            if index % 10 == 7 { throw Refused() }
                            return db.lastInsertedRowID
                        }
                        return (index, id > 0)
                    } catch {
                        return (index, false)
                    }
                }
            }
            var outcomes: [Int: Bool] = [:]
            for await (index, ok) in group { outcomes[index] = ok }
            return outcomes
        }
        #expect(outcomes.count == 200)
        #expect(outcomes.filter { $0.value }.count == 180)
        #expect(outcomes.filter { !$0.value }.keys.allSatisfy { $0 % 10 == 7 })
        let names = try await pool.read { db in try String.fetchAll(db, sql: "SELECT name FROM item") }
        #expect(names.count == 180)
        #expect(!names.contains("item 7"))
    }
}

@Suite struct PeriodicallyTests {
    final class Runs: @unchecked Sendable {
        // @unchecked: touched by one task at a time (the loop), read after it ends.
        var count = 0
    }

    @Test func runsFirstThenEveryIntervalAndOnceMoreAfterTheStop() async throws {
        let runs = Runs()
        let loop = Task { await Periodically.run(every: .milliseconds(5), last: true) { runs.count += 1 } }
        while runs.count < 3 { try await Task.sleep(for: .milliseconds(5)) }
        loop.cancel()
        await loop.value
        let stopped = runs.count
        try await Task.sleep(for: .milliseconds(30))
        #expect(runs.count == stopped, "the body ran after the loop ended")
        #expect(stopped >= 4, "the last run after the stop is missing")
    }

    @Test func waitsFirstWhenAsked() async throws {
        let runs = Runs()
        let loop = Task { await Periodically.run(every: .seconds(3600), first: false) { runs.count += 1 } }
        try await Task.sleep(for: .milliseconds(20))
        loop.cancel()
        await loop.value
        #expect(runs.count == 0)
    }
}

@Suite struct RetentionTests {
    @Test func rowsOlderThanTheRetentionGoInBatchesAndTheTableStaysBounded() async throws {
        let folder = NSTemporaryDirectory() + "lm-retention-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var migrator = DatabaseMigrator()
        migrator.registerMigration("log") { db in
            try db.execute(sql: "CREATE TABLE log (id INTEGER PRIMARY KEY, occurred_at INTEGER NOT NULL)")
        }
        let pool = try ServiceDatabase.open(path: "\(folder)/log.sqlite", durability: .normal, migrator: migrator)
        let now = Mutex<Int64>(1_000_000)
        let retention = Retention(
            pool: pool, table: "log", timeColumn: "occurred_at", keep: 3600, batch: 1000, clock: { now.withLock { $0 } },
            logger: Logger(label: "test"))
        func append(_ count: Int) async throws {
            let at = now.withLock { $0 }
            try await pool.write { db in
                for _ in 0..<count { try db.execute(sql: "INSERT INTO log (occurred_at) VALUES (?)", arguments: [at]) }
            }
        }
        func rows() async throws -> Int { try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM log") ?? 0 } }

        // A constant load: 2,500 rows an hour for ten hours, a sweep every hour.
        for _ in 0..<10 {
            try await append(2500)
            now.withLock { $0 += 3601 }
            _ = try await retention.sweep()
            #expect(try await rows() <= 2500, "the log grew past one retention period of load")
        }
        try await append(700)
        #expect(try await retention.sweep() == 0, "rows younger than the retention stay")
        #expect(try await rows() == 700)
    }
}
