import GRDB
import GRDBSQLite

/// The hot path's look-ups read their one row straight from SQLite's column accessors:
/// GRDB's cursor, row and argument objects cost more per validation than the query itself
/// (a profile put them at about an eighth of the validation's CPU). The statement is
/// GRDB's cached one; it is reset after every use, as GRDB expects of a statement it lends.
/// Text is read by its length, never up to a NUL.
public struct LookupRow: ~Copyable {
    private let statement: OpaquePointer
    private static let empty: StaticString = ""

    /// Binds `arguments` (text) to the statement's parameters in order, steps once, and hands
    /// the row, if there is one, to `read`.
    public static func first<T>(_ statement: Statement, _ arguments: String..., read: (borrowing LookupRow) throws -> T) throws -> T? {
        let handle = statement.sqliteStatement
        defer {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
        for (index, argument) in arguments.enumerated() {
            var text = argument
            let code = text.withUTF8 { bytes -> Int32 in
                // Empty text is bound as text, not NULL; SQLITE_TRANSIENT: SQLite copies it before this returns.
                let start = UnsafeRawPointer(bytes.baseAddress ?? Self.empty.utf8Start).assumingMemoryBound(to: CChar.self)
                return sqlite3_bind_text(handle, Int32(index + 1), start, Int32(bytes.count), unsafeBitCast(-1, to: sqlite3_destructor_type.self))
            }
            guard code == SQLITE_OK else { throw Self.error(code, statement) }
        }
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return try read(LookupRow(statement: handle))
        case SQLITE_DONE: return nil
        case let code: throw Self.error(code, statement)
        }
    }

    private static func error(_ code: Int32, _ statement: Statement) -> DatabaseError {
        let message = sqlite3_db_handle(statement.sqliteStatement).flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) }
        return DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
    }

    public func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }

    public func int32(_ column: Int32) -> Int32 { Int32(clamping: sqlite3_column_int64(statement, column)) }

    public func uint32(_ column: Int32) -> UInt32 { UInt32(clamping: sqlite3_column_int64(statement, column)) }

    public func isNull(_ column: Int32) -> Bool { sqlite3_column_type(statement, column) == SQLITE_NULL }

    public func text(_ column: Int32) -> String {
        // sqlite3_column_text first, then its length (SQLite's documented order).
        guard let bytes = sqlite3_column_text(statement, column) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(statement, column))), as: UTF8.self)
    }
}
