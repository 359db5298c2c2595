import NIOCore

/// Runs a connection's tasks on the connection's event loop, so that reading a call,
/// handling it and writing the answer involve no hop between the event loop and Swift's
/// global executor threads. Handlers are short (a look-up, a decision); anything that
/// blocks for long belongs on its own queue (GRDB's writes, for example, already are).
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `eventLoop` is immutable and EventLoop is thread-safe by contract.
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
