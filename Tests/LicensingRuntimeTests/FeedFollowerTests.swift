import GRDB
import LicensingRPC
import LicensingRuntime
import LicensingTestSupport
import Logging
import Synchronization
import Testing

/// A source's feed in memory: events numbered from 1 in an epoch that can start over.
private final class Source: Sendable {
    private let state = Mutex((epoch: "e1", events: [UInt64](), pulling: 0, mostAtOnce: 0, pulls: 0))

    func publish(_ count: Int) {
        state.withLock { state in
            for _ in 0..<count { state.events.append(UInt64(state.events.count + 1)) }
        }
    }

    /// A restore: a new epoch holding `count` events.
    func startOver(epoch: String, with count: Int) {
        state.withLock { state in
            state.epoch = epoch
            state.events = (0..<count).map { UInt64($0 + 1) }
        }
    }

    func pull(after: UInt64) async throws -> FeedPage<UInt64> {
        state.withLock { state in
            state.pulling += 1
            state.pulls += 1
            state.mostAtOnce = max(state.mostAtOnce, state.pulling)
        }
        // Long enough for catch-ups and the run loop to meet.
        try? await Task.sleep(for: .milliseconds(5))
        return state.withLock { state in
            state.pulling -= 1
            let page = Array(state.events.filter { $0 > after }.prefix(10))
            return FeedPage(events: page, lastSeq: UInt64(state.events.count), nextAfter: page.last ?? after, epoch: state.epoch)
        }
    }

    var mostAtOnce: Int { state.withLock { $0.mostAtOnce } }
    var pulls: Int { state.withLock { $0.pulls } }
}

@Suite struct FeedFollowerTests {
    private func follower(_ source: Source, _ database: DatabasePool, applied: SharedValue<[UInt64]>, restarts: Counter) -> FeedFollower<UInt64> {
        FeedFollower(feed: "source", database: database, idleInterval: .milliseconds(20), logger: Logger(label: "test")) { after in
            try await source.pull(after: after)
        } apply: { events, cursor, restart in
            try await database.write { db in
                if restart { restarts.increment() }
                try cursor.store(feed: "source", in: db)
            }
            applied.withLock { applied in
                if restart { applied.removeAll() }
                applied += events.filter { $0 > (applied.last ?? 0) }
            }
        }
    }

    private func database(_ folder: TemporaryFolder) throws -> DatabasePool {
        let pool = try DatabasePool(path: "\(folder.path)/follower.sqlite")
        try pool.write { db in try db.execute(sql: FeedCursor.createTable) }
        return pool
    }

    /// The run loop and any number of catch-ups never pull at once (two pulls could store an
    /// older cursor after a newer one); a catch-up returns only after a pull that started after
    /// it asked, so what was published before it is applied.
    @Test func onePullAtATimeAndCatchUpSeesWhatWasPublishedBefore() async throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let source = Source()
        let applied = SharedValue<[UInt64]>([])
        let feed = follower(source, try database(folder), applied: applied, restarts: Counter())
        let running = Task { try await feed.run() }
        defer { running.cancel() }
        for round in 1...5 {
            source.publish(3)
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<20 { group.addTask { await feed.catchUp() } }
            }
            #expect(applied.withLock { $0.count } == 3 * round)
        }
        #expect(source.mostAtOnce == 1)
        #expect(applied.withLock { $0 } == Array(1...15))
    }

    /// A new epoch (the source was restored) starts the cursor over in it; the follower's
    /// position survives a restart of the follower itself.
    @Test func aNewEpochStartsOverAndTheCursorSurvivesARestart() async throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let source = Source()
        let database = try database(folder)
        let applied = SharedValue<[UInt64]>([])
        let restarts = Counter()
        source.publish(25)
        let first = follower(source, database, applied: applied, restarts: restarts)
        while try await first.pollOnce() {}
        #expect(applied.withLock { $0.count } == 25)
        #expect(first.position().appliedSeq == 25)

        // Another follower on the same database goes on from the stored cursor.
        source.publish(2)
        let again = follower(source, database, applied: applied, restarts: restarts)
        try await again.pollOnce()
        #expect(applied.withLock { $0 } == Array(1...27))

        source.startOver(epoch: "e2", with: 4)
        try await again.pollOnce()
        #expect(restarts.value == 1)
        #expect(applied.withLock { $0 } == [1, 2, 3, 4])
        #expect(again.position().appliedSeq == 4)
        let stored = try await database.read { db in try FeedCursor.load(feed: "source", in: db) }
        #expect(stored == FeedCursor(appliedSeq: 4, epoch: "e2"))
    }
}
