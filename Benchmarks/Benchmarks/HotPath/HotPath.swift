import Benchmark
import Foundation
import GRDB
import LicensingCore
import LicensingWire
import NIOCore

// What one validation costs, piece by piece: the frame through protobuf-c, the keyed hash
// of the license key, the decision, and the replica look-up in SQLite.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput], maxDuration: .seconds(2))

    let key = LicenseKey.generate()
    let request = ValidateRequest(licenseKey: key.description, fingerprint: "bench-machine-1", feature: "export")
    let envelope = Envelope(
        callId: 42, method: "licensing.v1.Validation/Validate", payload: request.serializedBytes(), timeoutMicros: 1_000_000,
        metadata: [MetadataEntry(key: "authorization", value: "lmk_" + String(repeating: "a", count: 52))])
    let frame = envelope.serializedBytes()

    Benchmark("envelope encode (protobuf-c)") { benchmark in
        var buffer = ByteBufferAllocator().buffer(capacity: 512)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            envelope.serialize(into: &buffer)
            blackHole(buffer.readableBytes)
        }
    }

    Benchmark("envelope + request decode (protobuf-c)") { benchmark in
        let buffer = ByteBuffer(bytes: frame)
        for _ in benchmark.scaledIterations {
            let decoded = try Envelope(buffer: buffer)
            blackHole(try ValidateRequest(serializedBytes: decoded.payload))
        }
    }

    let secret = try! KeyHashSecret(bytes: Array(repeating: 7, count: 32))
    Benchmark("parse + HMAC-SHA256 of a license key") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try LicenseKey(parsing: key.description).hash(secret: secret))
        }
    }

    let facts = LicenseFacts(
        licenseID: "lic_1", state: .active, startsAt: 1_700_000_000, expiresAt: 1_900_000_000, graceSeconds: 86400,
        features: ["core", "export"], licenseType: .perDevice, maxMachines: 3)
    Benchmark("decision") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(LicenseDecider.decide(facts, ValidationQuery(feature: "export", machine: .activated), now: 1_800_000_000))
        }
    }

    // The replica look-up: the same table shape and query as license-validation's.
    let folder = NSTemporaryDirectory() + "hotpath-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let pool = try! DatabasePool(path: folder + "/replica.sqlite")
    let hashes = (0..<100_000).map { _ in LicenseKey.generate().hash(secret: secret) }
    try! pool.write { db in
        try db.execute(sql: """
            CREATE TABLE replica_license (license_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, state INTEGER, starts_at INTEGER,
                expires_at INTEGER, grace_seconds INTEGER, features TEXT, allowed_regions TEXT, denied_regions TEXT, license_type INTEGER,
                max_machines INTEGER, max_users INTEGER, max_seats INTEGER, overage_permille INTEGER, named_users TEXT,
                department_id TEXT, tenant_id TEXT)
            """)
        for (index, hash) in hashes.enumerated() {
            try db.execute(
                sql: "INSERT INTO replica_license VALUES (?, ?, 1, 0, 0, 0, 'core,export', '', '', 2, 3, 0, 0, 1000, '', '', 'default')",
                arguments: ["lic_\(index)", hash])
        }
    }
    let query = """
        SELECT license_id, state, starts_at, expires_at, grace_seconds, features, allowed_regions, denied_regions,
            license_type, max_machines, max_users, max_seats, overage_permille, named_users, department_id, tenant_id
        FROM replica_license WHERE key_hash = ?
        """
    // As license-validation read before: a pooled reader and a transaction per look-up.
    Benchmark("replica look-up (SQLite, 100k licenses, pooled reader)") { benchmark in
        var index = 0
        for _ in benchmark.scaledIterations {
            index = (index &+ 7919) % hashes.count
            let hash = hashes[index]
            blackHole(try pool.read { db in try Row.fetchOne(db.cachedStatement(sql: query), arguments: [hash]) })
        }
    }
    // As it reads now (LookupConnections): the thread's own connection, one snapshot held
    // across look-ups, the row read in place through a cursor.
    var lookupConfiguration = Configuration()
    lookupConfiguration.readonly = true
    lookupConfiguration.allowsUnsafeTransactions = true
    let lookup = try! DatabaseQueue(path: folder + "/replica.sqlite", configuration: lookupConfiguration)
    try! lookup.inDatabase { db in try db.beginTransaction(.deferred) }
    Benchmark("replica look-up (SQLite, 100k licenses, own connection and snapshot)") { benchmark in
        var index = 0
        for _ in benchmark.scaledIterations {
            index = (index &+ 7919) % hashes.count
            let hash = hashes[index]
            try lookup.inDatabase { db in
                let rows = try Row.fetchCursor(db.cachedStatement(sql: query), arguments: [hash])
                try withExtendedLifetime(rows) {
                    guard let row = try rows.next() else { return }
                    for column in 0..<16 { blackHole(row[column] as DatabaseValue) }
                }
            }
        }
    }

    let signer = CertificateSigningKey.generate()
    let statement = ValidationStatement(version: 1, reason: .valid, licenseId: "lic_1", serverTime: 1_800_000_000, nonce: Array(repeating: 1, count: 16)).serializedBytes()
    Benchmark("Ed25519 signature of an answer") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(signer.sign(statement))
        }
    }
}
