import Foundation
import GRDB
import LicensingRuntime
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
