import Crypto
import Foundation
import GRDB
import LicensingRPC
import LicensingWire

/// A consistent online copy of a service's database, streamed in chunks: `VACUUM INTO` a
/// file beside the database (SQLite reads one snapshot of it while writers go on), sent, and
/// removed. The copy is in clear on the wire to the caller (a Unix socket or mutual TLS); the
/// caller (licensectl backup) encrypts it.
public struct DatabaseSnapshot: Sendable {
    public let service: String
    public let database: any DatabaseReader
    static let chunkSize = 1 << 20

    public init(service: String, database: any DatabaseReader) {
        self.service = service
        self.database = database
    }

    public func register(in router: inout RPCRouter) {
        let snapshot = self
        router.registerStream(BackupMethods.snapshot) { _, _, stream in
            try await snapshot.send { try await stream.send($0) }
        }
    }

    public func send(_ send: (SnapshotChunk) async throws -> Void) async throws {
        let path = "\(database.path).snapshot-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let migrations = try await database.read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        }
        // VACUUM cannot run inside a transaction; it takes its own read snapshot.
        try await database.unsafeRead { db in try db.execute(sql: "VACUUM INTO ?", arguments: [path]) }
        guard let file = FileHandle(forReadingAtPath: path) else { throw RPCError(.internal, "the snapshot file vanished") }
        defer { try? file.close() }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        var hash = SHA256()
        var first = true
        while true {
            let data = try file.read(upToCount: Self.chunkSize) ?? Data()
            hash.update(data: data)
            let last = data.count < Self.chunkSize
            var chunk = SnapshotChunk(data: Array(data), last: last)
            if first {
                chunk.service = service
                chunk.migrations = migrations
                chunk.bytes = UInt64(size)
                chunk.takenAt = Int64(Date().timeIntervalSince1970)
                first = false
            }
            if last { chunk.sha256 = hash.finalize().map { String(format: "%02x", $0) }.joined() }
            try await send(chunk)
            if last { return }
        }
    }
}
