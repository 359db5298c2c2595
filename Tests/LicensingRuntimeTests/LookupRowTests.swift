import GRDB
import LicensingRuntime
import Testing

/// The hot path's look-ups read SQLite's columns directly: text must come back whole (a NUL
/// inside is data, not its end), empty text must bind as text (not NULL), and numbers out
/// of a column's range must not trap.
@Suite struct LookupRowTests {
    @Test func textIsBoundAndReadWholeAndEmptyTextIsNotNull() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE license (key TEXT PRIMARY KEY, name TEXT NOT NULL, seats INTEGER, note TEXT)")
            // In SQL: GRDB binds Swift text up to its first NUL.
            try db.execute(sql: "INSERT INTO license VALUES ('a' || char(0) || 'b', 'café' || char(0) || 'tail', 1 << 40, NULL)")
            try db.execute(sql: "INSERT INTO license VALUES (?, ?, ?, ?)", arguments: ["", "empty key", -5, "x"])
            try db.execute(sql: "INSERT INTO license VALUES (?, ?, ?, ?)", arguments: ["a", "cut at the NUL", 1, "x"])
        }
        try queue.read { db in
            let statement = try db.cachedStatement(sql: "SELECT name, seats, note FROM license WHERE key = ?")
            let whole = try LookupRow.first(statement, "a\u{0}b") { row in (row.text(0), row.uint32(1), row.isNull(2)) }
            #expect(whole?.0 == "café\u{0}tail")
            #expect(whole?.1 == UInt32.max, "a number beyond the column's type is clamped, not a trap")
            #expect(whole?.2 == true)
            let empty = try LookupRow.first(statement, "") { row in (row.text(0), row.uint32(1)) }
            #expect(empty?.0 == "empty key" && empty?.1 == 0)
            #expect(try LookupRow.first(statement, "missing") { row in row.text(0) } == nil)
            // The statement is reset after each use: it runs again with new arguments.
            #expect(try LookupRow.first(statement, "a") { row in row.text(0) } == "cut at the NUL")
            #expect(try Row.fetchOne(statement, arguments: ["a"])?["name"] == "cut at the NUL", "GRDB can use the statement after it")
        }
    }
}
