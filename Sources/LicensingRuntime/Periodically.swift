import ServiceLifecycle

/// Background work that repeats until the service stops: the body, then a pause of
/// `interval` that a graceful shutdown or a cancellation cuts short. The body's errors are
/// its own to report; the loop goes on. One place for what every service's scheduler,
/// prober, sampler and checkpointer did by hand.
public enum Periodically {
    /// `first`: run the body before the first pause (a sampler) or after it (a checkpointer
    /// that has nothing to do at start). `last`: run the body once more after the stop
    /// (a final checkpoint).
    public static func run(
        every interval: Duration, first: Bool = true, last: Bool = false, _ body: () async -> Void
    ) async {
        var pauseFirst = !first
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            if pauseFirst {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
            }
            pauseFirst = true
            await body()
        }
        if last { await body() }
    }
}
