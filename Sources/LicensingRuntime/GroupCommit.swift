import Synchronization
import GRDB
import Metrics

/// Group commit: mutations that arrive while a transaction is being written wait, then
/// commit together in the next one — one disk sync for many — each inside its own
/// savepoint, so a failing mutation rolls back alone. A caller's answer comes only after
/// the transaction holding its change has committed (is durable under synchronous=FULL).
public final class GroupCommitter: Sendable {
    /// `body` runs once, on the writer; `finish` once, after the commit.
    private struct Job: Sendable {
        let body: @Sendable (Database) throws -> any Sendable
        let finish: @Sendable (Result<any Sendable, any Error>) -> Void
    }

    private struct State {
        var queue: [Job] = []
        var draining = false
    }

    private let database: DatabasePool
    private let maxBatch: Int
    private let state = Mutex(State())
    private let batchSizes: Recorder
    private let commitTime: Metrics.Timer

    /// `name` labels the metrics: the service whose database this is.
    public init(database: DatabasePool, name: String = "", maxBatch: Int = 256) {
        self.database = database
        self.maxBatch = maxBatch
        self.batchSizes = Recorder(label: "group_commit_batch_size", dimensions: [("database", name)], aggregate: true)
        self.commitTime = Metrics.Timer(label: "group_commit_seconds", dimensions: [("database", name)], preferredDisplayUnit: .seconds)
    }

    /// Runs `body` in the next group transaction and returns its result once committed.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let result = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, any Error>) in
            let job = Job(body: { try body($0) }, finish: { continuation.resume(with: $0) })
            let start = state.withLock { state -> Bool in
                state.queue.append(job)
                guard !state.draining else { return false }
                state.draining = true
                return true
            }
            if start { Task { await self.drain() } }
        }
        return result as! T
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Job] in
                let batch = Array(state.queue.prefix(maxBatch))
                state.queue.removeFirst(batch.count)
                if batch.isEmpty { state.draining = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            batchSizes.record(batch.count)
            let started = ContinuousClock.now
            defer { commitTime.record(duration: ContinuousClock.now - started) }
            do {
                let results = try await database.write { db -> [Result<any Sendable, any Error>] in
                    var results: [Result<any Sendable, any Error>] = []
                    for job in batch {
                        var value: (any Sendable)?
                        do {
                            try db.inSavepoint {
                                value = try job.body(db)
                                return .commit
                            }
                            results.append(.success(value!))
                        } catch {
                            // Some errors (disk full, I/O) make SQLite roll the whole transaction
                            // back: then nothing of the batch stands, and the rest must not run
                            // outside it.
                            guard db.isInsideTransaction else { throw error }
                            results.append(.failure(error))
                        }
                    }
                    return results
                }
                for (job, result) in zip(batch, results) { job.finish(result) }
            } catch {
                // The transaction itself failed to commit: nothing of it is durable.
                for job in batch { job.finish(.failure(error)) }
            }
        }
    }
}
