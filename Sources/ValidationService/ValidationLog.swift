import Synchronization
import GRDB
import LicensingWire
import Logging
import Metrics
import ServiceLifecycle

/// The record of every validation: appended in memory, written in batches (one
/// transaction, one sync per batch) so the hot path never waits for a disk sync.
/// Memory is bounded: when `capacity` entries are waiting, appends wait for the next
/// write. On shutdown every waiting entry is written before the service stops.
///
/// When the log cannot be written at all (a full disk, a read-only file system),
/// validations go on: entries are kept in memory up to `capacity` and retried, and beyond
/// that they are counted (`validation_log_dropped_entries`) and said in the server log when
/// writing works again. Answering products beats a complete log while the disk is full.
final class ValidationLog: Service, Sendable {
    struct Entry: Sendable {
        let occurredAt: Int64
        let licenseID: String
        let reason: ReasonCode
        let fingerprintHash: String
        let region: String
        let feature: String
    }

    private struct State {
        var pending: [Entry] = []
        var waitingForRoom: [CheckedContinuation<Void, Never>] = []
        var stopped = false
        /// The last write failed: appends beyond capacity are dropped, not waited for.
        var failing = false
        var dropped = 0
    }

    private let database: DatabasePool
    private let capacity: Int
    private let interval: Duration
    private let logger: Logger
    private let state = Mutex(State())

    init(database: DatabasePool, capacity: Int = 50_000, interval: Duration = .milliseconds(20), logger: Logger) {
        self.database = database
        self.capacity = capacity
        self.interval = interval
        self.logger = logger
    }

    /// Appends without waiting; false when the log is full (then `append` waits for room).
    func tryAppend(_ entry: Entry) -> Bool {
        state.withLock { state in
            if state.pending.count >= capacity, !state.stopped {
                guard state.failing else { return false }
                state.dropped += 1
                return true
            }
            state.pending.append(entry)
            return true
        }
    }

    func append(_ entry: Entry) async {
        while !tryAppend(entry) {
            await withCheckedContinuation { continuation in
                let wait = state.withLock { state -> Bool in
                    guard state.pending.count >= capacity, !state.stopped else { return false }
                    state.waitingForRoom.append(continuation)
                    return true
                }
                if !wait { continuation.resume() }
            }
        }
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            await flush()
        }
        // Stopping: what was accepted is written before the process exits.
        state.withLock { $0.stopped = true }
        await flush()
    }

    private static let rowsPerInsert = 64
    static let droppedEntries = Counter(label: "validation_log_dropped_entries")

    private static func insert(rows: Int) -> String {
        "INSERT INTO validation_log (occurred_at, license_id, reason, fingerprint_hash, region, feature) VALUES "
            + Array(repeating: "(?, ?, ?, ?, ?, ?)", count: rows).joined(separator: ", ")
    }

    /// Appends entries to the log table (the primary's own, and the batches replicas ship).
    /// Many rows per statement: each execution costs far more than a row does, and a shorter
    /// write is a shorter burst next to the event loops. Two statements only (a full chunk,
    /// a single row): each prepared statement is memory held for the life of the connection.
    static func insert(_ entries: ArraySlice<Entry>, in db: Database) throws {
        var start = entries.startIndex
        while start < entries.endIndex {
            let count = entries.endIndex - start >= rowsPerInsert ? rowsPerInsert : 1
            let insert = try db.cachedStatement(sql: Self.insert(rows: count))
            var arguments = StatementArguments()
            for entry in entries[start..<start + count] {
                arguments += [entry.occurredAt, entry.licenseID, entry.reason.rawValue, entry.fingerprintHash, entry.region, entry.feature]
            }
            try insert.execute(arguments: arguments)
            start += count
        }
    }

    /// Writes everything pending in one transaction.
    func flush() async {
        let batch = state.withLock { state -> [Entry] in
            defer { state.pending.removeAll(keepingCapacity: true) }
            return state.pending
        }
        if !batch.isEmpty {
            do {
                try await database.write { db in try Self.insert(batch[...], in: db) }
                let dropped = state.withLock { state -> Int? in
                    defer { (state.failing, state.dropped) = (false, 0) }
                    return state.failing ? state.dropped : nil
                }
                if let dropped {
                    logger.notice("validation log written again", metadata: ["dropped_entries": "\(dropped)"])
                    if dropped > 0 { Self.droppedEntries.increment(by: dropped) }
                }
            } catch {
                // Put the batch back so it is retried, not lost; said once, not every retry.
                let first = state.withLock { state -> Bool in
                    state.pending.insert(contentsOf: batch, at: 0)
                    if state.pending.count > capacity {
                        state.dropped += state.pending.count - capacity
                        state.pending.removeLast(state.pending.count - capacity)
                    }
                    defer { state.failing = true }
                    return !state.failing
                }
                if first {
                    logger.error(
                        "validation log cannot be written; validations go on, entries are kept in memory and retried",
                        metadata: ["entries": "\(batch.count)", "capacity": "\(capacity)", "error": "\(error)"])
                }
            }
        }
        let waiting = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.pending.count < capacity || state.stopped || state.failing else { return [] }
            defer { state.waitingForRoom.removeAll() }
            return state.waitingForRoom
        }
        for continuation in waiting { continuation.resume() }
    }

}
