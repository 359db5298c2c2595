import Foundation
import GRDB

/// A service's part of a customer export (GDPR article 15): named sections, each the rows
/// it holds about the customer with their column names. Columns that hold secrets (key
/// hashes, sealed keys, signing secrets, tokens) are never exported: they are the
/// system's, not the customer's, and would be a way into it.
public struct CustomerExportSections {
    private var sections: [String: [[String: Any]]] = [:]
    private var notes: [String] = []
    public private(set) var records = 0
    /// Sections larger than this keep their newest rows and say how many were left out.
    /// (An answer travels in one frame of at most 4 MiB.)
    public static let maxRowsPerSection = 2_000

    static let secretColumns: Set<String> = ["key_hash", "secret", "secret_hash", "sealed", "sealed_private_key", "reveal_token", "response", "token_hash", "contact", "crm_hash", "user_hash", "user", "pseudonym", "wrapped"]

    public init() {}

    /// Rows made by the service itself (values it had to open first).
    public mutating func add(_ name: String, objects: [[String: Any]]) {
        sections[name, default: []] += objects.prefix(Self.maxRowsPerSection)
        records += min(objects.count, Self.maxRowsPerSection)
    }

    public mutating func add(_ name: String, _ db: Database, sql: String, arguments: StatementArguments = []) throws {
        let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
        var values: [[String: Any]] = []
        for row in rows.prefix(Self.maxRowsPerSection) {
            var object: [String: Any] = [:]
            for (column, value) in row where !Self.secretColumns.contains(column) {
                switch value.storage {
                case .null: object[column] = NSNull()
                case .int64(let number): object[column] = number
                case .double(let number): object[column] = number
                case .string(let text): object[column] = text
                case .blob(let data): object[column] = data.base64EncodedString()
                }
            }
            values.append(object)
        }
        if rows.count > Self.maxRowsPerSection { notes.append("\(name): the newest \(Self.maxRowsPerSection) of \(rows.count) rows") }
        sections[name, default: []] += values
        records += values.count
    }

    /// What a service answers: the document and its row count.
    public struct Output: Sendable {
        public let json: [UInt8]
        public let records: Int
    }

    public var output: Output { Output(json: Array(json.utf8), records: records) }

    public var json: String {
        var document: [String: Any] = sections
        if !notes.isEmpty { document["_truncated"] = notes }
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// `?, ?, ?` for an IN list (never empty: an empty list matches nothing).
    public static func placeholders(_ count: Int) -> String {
        count == 0 ? "NULL" : Array(repeating: "?", count: count).joined(separator: ", ")
    }
}
