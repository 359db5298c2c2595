import NIOCore

/// Runs tasks on an event loop. The server runs each connection's tasks on the
/// connection's loop, so that reading a call, handling it and writing the answer involve
/// no hop between the event loop and Swift's global executor threads; clients can do the
/// same with `withTaskExecutorPreference`. Handlers are short (a look-up, a decision); anything that
/// blocks for long belongs on its own queue (GRDB's writes, for example, already are).
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
