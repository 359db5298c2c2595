/// What a server connection decides without its channel: whether an answer goes out now or
/// with the end of the read being handled, when reading is held for back-pressure and
/// resumed, and when a draining connection closes. Kept apart so that each rule has a test
/// of its own; the handler asks and does what it is told.
struct ConnectionState {
    enum Lifecycle: Equatable {
        /// Taking new calls.
        case serving
        /// No new calls (graceful shutdown, or a frame that broke the protocol); the
        /// connection closes once the calls in flight have answered.
        case draining
        /// Closing; nothing more happens.
        case closing
    }

    private(set) var lifecycle: Lifecycle = .serving
    /// Inside a read: answers are written and flushed together at its end.
    private(set) var reading = false
    private(set) var flushPending = false
    /// Reading is held: the connection has its fill of calls, or its peer takes no answers.
    private(set) var readHeld = false
    /// Waiting calls are being started (a call that finishes at once must not recurse).
    private(set) var startingWaiting = false

    var acceptsCalls: Bool { lifecycle == .serving }

    mutating func readStarted() {
        reading = true
    }

    /// An answer is ready: true to flush it now; false when the read's end will.
    mutating func answerReady() -> Bool {
        guard reading else { return true }
        flushPending = true
        return false
    }

    /// The read ended: true when answers written during it wait for a flush.
    mutating func readEnded() -> Bool {
        reading = false
        defer { flushPending = false }
        return flushPending
    }

    /// The channel asks for more bytes: true to read; false holds reading while `busy`.
    mutating func readRequested(busy: Bool) -> Bool {
        if busy { readHeld = true }
        return !busy
    }

    /// Room was made (a call finished, the peer took answers): true to resume a held read.
    mutating func roomMade(busy: Bool) -> Bool {
        guard readHeld, !busy else { return false }
        readHeld = false
        return true
    }

    mutating func drain() {
        if lifecycle == .serving { lifecycle = .draining }
    }

    /// A draining connection with nothing in flight closes: returns whether to close now and
    /// whether answers still wait for a flush first.
    mutating func closeIfIdle(_ idle: Bool) -> (close: Bool, flushFirst: Bool) {
        guard lifecycle == .draining, idle else { return (false, false) }
        lifecycle = .closing
        defer { flushPending = false }
        return (true, flushPending)
    }

    /// Enters starting the waiting calls; false when already doing so (a nested call).
    mutating func beginStartingWaiting() -> Bool {
        guard !startingWaiting else { return false }
        startingWaiting = true
        return true
    }

    mutating func endStartingWaiting() {
        startingWaiting = false
    }
}
