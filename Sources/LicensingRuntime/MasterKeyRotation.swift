import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

/// A column of values sealed under the master key, and how each row's sealing context (the
/// associated data the value is bound to) is formed from the row's `reads` columns.
public struct SealedColumn: Sendable {
    public let table: String
    public let column: String
    public let reads: [String]
    public let context: @Sendable (Row) -> String
    public let filter: String

    public init(table: String, column: String, reads: [String], filter: String = "1", context: @escaping @Sendable (Row) -> String) {
        self.table = table
        self.column = column
        self.reads = reads
        self.context = context
        self.filter = filter
    }
}

/// Master-key rotation, online: the key ring is read again, and every value an older
/// version sealed is sealed again under the newest, a batch per transaction so writers are
/// held for milliseconds at a time. Afterwards the census says which versions are still
/// needed; a version no value and no kept backup needs can be retired.
public struct MasterKeyRotation: Sendable {
    public let service: String
    public let masterKey: MasterKey
    public let database: DatabasePool
    public let columns: [SealedColumn]
    static let batch = 256

    public init(service: String, masterKey: MasterKey, database: DatabasePool, columns: [SealedColumn]) {
        self.service = service
        self.masterKey = masterKey
        self.database = database
        self.columns = columns
    }

    /// Values sealed again under the current version.
    public func rewrap() async throws -> UInt64 {
        var total: UInt64 = 0
        for column in columns {
            var after: Int64 = 0
            while true {
                let start = after
                let (done, last) = try await database.write { db -> (UInt64, Int64?) in
                    let rows = try Row.fetchAll(
                        db,
                        sql: """
                            SELECT rowid AS lm_rowid, \(column.column) AS lm_sealed, \(column.reads.joined(separator: ", ")) FROM \(column.table)
                            WHERE (\(column.filter)) AND rowid > ? ORDER BY rowid LIMIT \(Self.batch)
                            """, arguments: [start])
                    var done: UInt64 = 0
                    for row in rows {
                        guard let sealed = row["lm_sealed"] as Data?, !sealed.isEmpty else { continue }
                        guard let fresh = try self.masterKey.rewrap(Array(sealed), context: column.context(row)) else { continue }
                        try db.execute(sql: "UPDATE \(column.table) SET \(column.column) = ? WHERE rowid = ?", arguments: [Data(fresh), row["lm_rowid"] as Int64])
                        done += 1
                    }
                    return (done, rows.count == Self.batch ? rows.last?["lm_rowid"] : nil)
                }
                total += done
                guard let last else { break }
                after = last
            }
        }
        return total
    }

    /// How many stored values each version sealed.
    public func census() async throws -> [String: UInt64] {
        try await database.read { db in
            var uses: [String: UInt64] = [:]
            for column in columns {
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(MasterKey.versionExpression(column.column)) AS version, COUNT(*) AS n FROM \(column.table)
                        WHERE (\(column.filter)) AND length(\(column.column)) > 0 GROUP BY version
                        """)
                for row in rows { uses[row["version"], default: 0] += UInt64(row["n"] as Int64) }
            }
            return uses
        }
    }

    /// The RPC's answer: reload, rewrap when asked, then the census (plus `extra` values the
    /// caller counted itself).
    public func answer(_ request: RewrapSecretsRequest, extra: (rewrap: @Sendable () async throws -> UInt64, census: @Sendable () async throws -> [String: UInt64])? = nil) async throws -> RewrapSecretsResponse {
        let versions: [String]
        do {
            versions = try masterKey.reload()
        } catch {
            throw RPCError(.failedPrecondition, "the master key could not be read again: \(error); nothing was changed")
        }
        var rewrapped: UInt64 = 0
        if request.rewrap {
            rewrapped = try await rewrap() + (try await extra?.rewrap() ?? 0)
        }
        var uses = try await census()
        for (version, count) in try await extra?.census() ?? [:] { uses[version, default: 0] += count }
        return RewrapSecretsResponse(
            service: service, currentVersion: masterKey.currentVersion, versions: versions, rewrapped: rewrapped,
            uses: uses.sorted { $0.key < $1.key }.map { MasterKeyUse(version: $0.key, sealed: $0.value) })
    }
}
