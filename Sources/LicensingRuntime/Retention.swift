import GRDB
import Logging
import ServiceLifecycle

/// Keeps an append-only table to a retention period: rows older than it are removed in
/// small batches, one short transaction each, so the writers beside it never wait long and
/// the table's size follows the load instead of growing for ever.
public final class Retention: Service, Sendable {
    private let pool: DatabasePool
    private let table: String
    private let timeColumn: String
    private let keep: Int64
    private let batch: Int
    private let interval: Duration
    private let clock: @Sendable () -> Int64
    private let logger: Logger

    /// `keep`: seconds rows are kept; `clock`: Unix seconds now.
    public init(
        pool: DatabasePool, table: String, timeColumn: String, keep: Int64, batch: Int = 1000, interval: Duration = .seconds(60),
        clock: @escaping @Sendable () -> Int64, logger: Logger
    ) {
        self.pool = pool
        self.table = table
        self.timeColumn = timeColumn
        self.keep = keep
        self.batch = batch
        self.interval = interval
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        await Periodically.run(every: interval) {
            do {
                let removed = try await sweep()
                if removed > 0 { logger.debug("retention removed rows", metadata: ["table": "\(table)", "rows": "\(removed)"]) }
            } catch {
                logger.notice("retention failed; retrying", metadata: ["table": "\(table)", "error": "\(error)"])
            }
        }
    }

    /// Removes every row older than the retention period, a batch at a time; returns how many.
    @discardableResult
    public func sweep() async throws -> Int {
        let cutoff = clock() - keep
        var removed = 0
        while !Task.isCancelled {
            // Rows are appended in time order, so the oldest are at the lowest rowids and the
            // scan stops after one batch.
            let count = try await pool.write { [table, timeColumn, batch] db in
                try db.execute(
                    sql: "DELETE FROM \(table) WHERE rowid IN (SELECT rowid FROM \(table) WHERE \(timeColumn) < ? ORDER BY rowid LIMIT ?)",
                    arguments: [cutoff, batch])
                return db.changesCount
            }
            removed += count
            if count < batch { break }
            await Task.yield()
        }
        return removed
    }
}
