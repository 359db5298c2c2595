import Histogram
import LicensingRPC
import LicensingWire
import NIOCore

/// One call of an operation. `next` checks the answer and returns the operation's next
/// call, or nil when the operation is complete (checkout+checkin is two calls).
struct BenchCall: Sendable {
    let method: String
    let payload: [UInt8]
    let next: @Sendable ([UInt8]) throws -> BenchCall?

    static func of<Request, Response>(
        _ method: WireMethod<Request, Response>, _ request: Request, then: @escaping @Sendable (Response) throws -> BenchCall? = { _ in nil }
    ) -> BenchCall {
        BenchCall(method: method.name, payload: request.serializedBytes()) { payload in
            try then(try Response(serializedBytes: payload))
        }
    }
}

/// An answer that is not VALID; errors are counted by the reason it gave.
struct Refused: Error, CustomStringConvertible {
    let reason: ReasonCode
    init(_ reason: ReasonCode) { self.reason = reason }
    var description: String { "answered \(reason)" }
}

/// What one run shares between its connections.
final class LoadPlan: Sendable {
    let operation: @Sendable (Int) -> BenchCall
    let metadata: [MetadataEntry]
    let inFlight: Int
    let count: Int?
    let rate: Double?
    let start: ContinuousClock.Instant
    let end: ContinuousClock.Instant
    let connections: Int
    /// Next operation index (closed loop) and operations finished (progress).
    let next = Counter()
    let done = Counter()

    init(
        operation: @escaping @Sendable (Int) -> BenchCall, metadata: [MetadataEntry], inFlight: Int, count: Int?, rate: Double?,
        start: ContinuousClock.Instant, end: ContinuousClock.Instant, connections: Int
    ) {
        self.operation = operation
        self.metadata = metadata
        self.inFlight = inFlight
        self.count = count
        self.rate = rate
        self.start = start
        self.end = end
        self.connections = connections
    }
}

/// One connection of the load, driven from its own event loop the way redis-benchmark
/// drives its sockets: a call goes out as soon as the previous answer is read (the
/// answers of one read leave in one flush), or, at a constant rate, when its slot on the
/// timetable comes; a call that has to wait for a free slot is still timed from its
/// scheduled time, so a stall shows in the latencies instead of hiding.
final class LoadConnection: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundOut = Envelope

    private struct Pending {
        let scheduled: ContinuousClock.Instant
        let call: BenchCall
    }

    private let plan: LoadPlan
    private let slot: Int
    private let finished: EventLoopPromise<Run.Outcome>
    private var outcome = Run.Outcome()
    private var context: ChannelHandlerContext?
    private var calls: [UInt64: Pending] = [:]
    private var nextCallID: UInt64 = 1
    /// Constant rate: this connection's operations are indices slot, slot + N, ...; the
    /// ones due while every slot was busy wait here with their scheduled times.
    private var nextScheduled = 0
    private var due = CircularBuffer<(index: Int, scheduled: ContinuousClock.Instant)>()
    private var noMore = false
    private var closed = false
    private var flushPending = false
    private var reading = false

    init(plan: LoadPlan, slot: Int, finished: EventLoopPromise<Run.Outcome>) {
        self.plan = plan
        self.slot = slot
        self.finished = finished
        self.nextScheduled = slot
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        if plan.rate != nil {
            scheduleNext()
        } else {
            for _ in 0..<plan.inFlight { startNext() }
        }
        flush()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        guard case .envelope(let envelope) = unwrapInboundIn(data), let pending = calls.removeValue(forKey: envelope.callId) else { return }
        if let status = envelope.status, status.code != .ok {
            complete(pending, error: "\(status.code)")
            return
        }
        do {
            if let following = try pending.call.next(envelope.payload) {
                send(following, scheduled: pending.scheduled)
            } else {
                complete(pending, error: nil)
            }
        } catch let error as RPCError {
            complete(pending, error: "\(error.code)")
        } catch {
            complete(pending, error: "\(error)")
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        let lost = calls.count + due.count
        calls.removeAll()
        due.removeAll()
        if lost > 0 {
            outcome.errors["connection closed", default: 0] += lost
            outcome.calls += lost
        }
        noMore = true
        finished.succeed(outcome)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Operations

    /// Closed loop: starts the next operation unless the run is over.
    private func startNext() {
        guard !noMore else { return }
        let index = plan.next.increment() - 1
        let now = ContinuousClock.now
        if let count = plan.count, index >= count { return stopStarting() }
        if plan.count == nil, now >= plan.end { return stopStarting() }
        send(plan.operation(index), scheduled: now)
    }

    /// Constant rate: arms a timer for this connection's next slot on the timetable.
    private func scheduleNext() {
        guard !noMore, let rate = plan.rate, let context else { return }
        let index = nextScheduled
        let scheduled = plan.start + .seconds(Double(index) / rate)
        if scheduled >= plan.end || plan.count.map({ index >= $0 }) == true { return stopStarting() }
        nextScheduled += plan.connections
        let wait = scheduled - ContinuousClock.now
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: TimeAmount(max(.zero, wait))) {
            let connection = loopBound.value
            guard !connection.closed else { return }
            connection.due.append((index, scheduled))
            connection.startDue()
            connection.scheduleNext()
            connection.flush()
        }
    }

    private func startDue() {
        while calls.count < plan.inFlight, let (index, scheduled) = due.popFirst() {
            send(plan.operation(index), scheduled: scheduled)
        }
    }

    private func send(_ call: BenchCall, scheduled: ContinuousClock.Instant) {
        guard let context else { return }
        let id = nextCallID
        nextCallID += 1
        calls[id] = Pending(scheduled: scheduled, call: call)
        let envelope = Envelope(callId: id, kind: .request, method: call.method, payload: call.payload, timeoutMicros: 30_000_000, metadata: plan.metadata)
        context.write(wrapOutboundOut(envelope), promise: nil)
        flushPending = true
    }

    private func complete(_ pending: Pending, error: String?) {
        if let error {
            outcome.errors[error, default: 0] += 1
        } else {
            let latency = ContinuousClock.now - pending.scheduled
            _ = outcome.histogram.record(UInt64(max(0, latency / .microseconds(1))))
        }
        outcome.calls += 1
        _ = plan.done.increment()
        if plan.rate != nil {
            startDue()
        } else {
            startNext()
        }
        stopIfDone()
    }

    private func stopStarting() {
        noMore = true
        stopIfDone()
    }

    private func stopIfDone() {
        guard noMore, calls.isEmpty, due.isEmpty, let context else { return }
        flush()
        context.close(promise: nil)
    }

    private func flush() {
        guard flushPending, !reading, let context else { return }
        flushPending = false
        context.flush()
    }
}
