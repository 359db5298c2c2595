import LicensingWire
import Logging
import Synchronization

/// Answers calls with a router inside the caller's process, with no socket: a service
/// tested through it meets what a socket would give it (the request's bytes decoded and
/// checked, interceptors, deadlines, statuses, metrics) without binding anything.
/// `RPCClient(inProcess:)` calls it like any other server.
public final class InProcessServer: Sendable {
    public let name: String
    private let logger: Logger
    /// Where handlers run (a socket server runs them on its connection's event loop); nil:
    /// the global executor.
    private let executor: (any TaskExecutor)?
    private let served = Mutex<Served?>(nil)

    private struct Served: Sendable {
        let router: RPCRouter
        let metrics: RPCServerMetrics
    }

    /// A server that answers once it is given a router: services that call each other can
    /// be made with clients of it first, as they would be with addresses.
    public init(_ name: String, executor: (any TaskExecutor)? = nil, logger: Logger = Logger(label: "in-process")) {
        self.name = name
        self.executor = executor
        self.logger = logger
    }

    public convenience init(_ name: String, router: RPCRouter, executor: (any TaskExecutor)? = nil, logger: Logger = Logger(label: "in-process")) {
        self.init(name, executor: executor, logger: logger)
        serve(router)
    }

    /// Starts answering with `router`; until then calls fail `UNAVAILABLE`, as with no one
    /// listening at an address.
    public func serve(_ router: RPCRouter) {
        served.withLock { $0 = Served(router: router, metrics: RPCServerMetrics(methods: router.registeredMethods)) }
    }

    /// Stops answering: calls fail `UNAVAILABLE` as when a service is stopped.
    public func stop() {
        served.withLock { $0 = nil }
    }

    /// Calls a unary method: its answer, or its status as an ``RPCError`` (`fromPeer`, as
    /// from a server that answered).
    public func unary(
        _ method: String, payload: [UInt8], metadata: RPCMetadata, deadline: ContinuousClock.Instant
    ) async throws(RPCError) -> [UInt8] {
        let started = ContinuousClock.now
        let call: ServerCall
        let handler: MethodHandler
        let served: Served
        do {
            (call, handler, served) = try admit(method, payload, metadata, deadline, started: started)
        } catch {
            throw answered(error)
        }
        let result: Result<[UInt8], any Error>
        switch handler {
        case .immediate(let body):
            do {
                switch try body(call) {
                case .answer(let payload): result = .success(payload)
                case .later(let work): result = await run(work, until: call.deadline, method: method)
                case .pending(let answer): result = await Self.wait(for: answer, until: call.deadline, method: method)
                }
            } catch {
                result = .failure(error)
            }
        case .unary(let body):
            let admitted = call
            result = await run({ try await body(admitted) }, until: deadline, method: method)
        case .serverStreaming:
            result = .failure(RPCError(.invalidArgument, "\(method) is server-streaming: call it as a stream"))
        }
        let answer = CallStatus.unary(result, method: method, deadline: deadline, logger: logger)
        finished(call, served, started: started, code: answer.failure?.code ?? .ok)
        switch answer {
        case .success(let payload): return payload
        case .failure(let error): throw answered(error)
        }
    }

    /// Calls a server-streaming method; the stream ends with the call, throwing its status
    /// when that is not OK. Ending iteration early cancels the call.
    public func stream(
        _ method: String, payload: [UInt8], metadata: RPCMetadata, deadline: ContinuousClock.Instant
    ) -> AsyncThrowingStream<[UInt8], any Error> {
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let started = ContinuousClock.now
        let call: ServerCall
        let served: Served
        let body: @Sendable (ServerCall, ResponseStream) async throws -> Void
        do throws(RPCError) {
            let admitted = try admit(method, payload, metadata, deadline, started: started)
            guard case .serverStreaming(let handler) = admitted.handler else {
                throw RPCError(.invalidArgument, "\(method) is unary: call it as such")
            }
            (call, body, served) = (admitted.call, handler, admitted.served)
        } catch {
            continuation.finish(throwing: answered(error))
            return stream
        }
        let logger = self.logger
        let task = Task(executorPreference: executor) {
            var failure: RPCError?
            do {
                try await body(call, ResponseStream { payload in
                    try Task.checkCancellation()
                    continuation.yield(payload)
                })
            } catch {
                failure = CallStatus.of(error, method: method, logger: logger)
            }
            self.finished(call, served, started: started, code: failure?.code ?? .ok)
            continuation.finish(throwing: failure.map(self.answered))
        }
        let timer = Task {
            try await Task.sleep(until: deadline, clock: .continuous)
            continuation.finish(throwing: answered(RPCError(.deadlineExceeded, "\(method) did not answer within \(deadline - started)")))
            task.cancel()
        }
        continuation.onTermination = { _ in
            task.cancel()
            timer.cancel()
        }
        return stream
    }

    /// What a socket server does before a handler runs: the request's envelope decoded as
    /// it would be from a frame (strings checked), the method found, the interceptors' say.
    private func admit(
        _ method: String, _ payload: [UInt8], _ metadata: RPCMetadata, _ deadline: ContinuousClock.Instant,
        started: ContinuousClock.Instant
    ) throws(RPCError) -> (call: ServerCall, handler: MethodHandler, served: Served) {
        guard deadline > started else {
            throw RPCError(.deadlineExceeded, "the deadline of \(method) expired before it was sent")
        }
        guard let served = served.withLock({ $0 }) else {
            throw RPCError(.unavailable, "nothing serves \(name) in this process; is the service running?")
        }
        let router = served.router
        let envelope: Envelope
        do {
            let sent = Envelope(method: method, payload: payload, timeoutMicros: 1, metadata: metadata.entries)
            envelope = try Envelope(serializedBytes: sent.serializedBytes())
        } catch {
            throw RPCError(.invalidArgument, "\(error)")
        }
        var call = ServerCall(
            method: method, payload: envelope.payload, metadata: RPCMetadata(envelope.metadata),
            deadline: min(deadline, started + .seconds(86_400)), logger: logger, peer: "in-process:\(name)")
        guard let handler = router.handler(for: method) else {
            served.metrics.record(method: method, code: .unimplemented, duration: ContinuousClock.now - started)
            throw .unimplemented(method)
        }
        do {
            for interceptor in router.interceptors { try interceptor.admit(&call) }
        } catch {
            finished(call, served, started: started, code: error.code)
            throw error
        }
        return (call, handler, served)
    }

    private func finished(_ call: ServerCall, _ served: Served, started: ContinuousClock.Instant, code: StatusCode) {
        let elapsed = ContinuousClock.now - started
        served.metrics.record(method: call.method, code: code, duration: elapsed)
        for interceptor in served.router.interceptors { interceptor.finished(call, code: code, after: elapsed) }
    }

    /// The error as its caller receives it from a server: the message cut as on a wire.
    private func answered(_ error: RPCError) -> RPCError {
        RPCError.answered(error.boundedStatus, metadata: error.metadata)
    }

    /// Runs a handler to its end (a mutation half done is worse than an unwanted answer),
    /// but its caller waits only until its deadline, like a client on a socket.
    private func run(
        _ work: @escaping @Sendable () async throws -> [UInt8], until deadline: ContinuousClock.Instant, method: String
    ) async -> Result<[UInt8], any Error> {
        let answer = FirstAnswer()
        Task(executorPreference: executor) {
            let result: Result<[UInt8], any Error>
            do { result = .success(try await work()) } catch { result = .failure(error) }
            answer.give(result)
        }
        return await answer.wait(until: deadline, method: method)
    }

    private static func wait(
        for pending: any PendingAnswer, until deadline: ContinuousClock.Instant, method: String
    ) async -> Result<[UInt8], any Error> {
        let answer = FirstAnswer()
        pending.whenComplete { answer.give($0) }
        return await answer.wait(until: deadline, method: method)
    }
}

/// The first of an answer, the deadline and the caller's cancellation.
private final class FirstAnswer: Sendable {
    private enum State {
        case waiting
        case answered(Result<[UInt8], any Error>)
        case awaited(CheckedContinuation<Result<[UInt8], any Error>, Never>)
        case done
    }
    private let state = Mutex<State>(.waiting)

    func give(_ result: Result<[UInt8], any Error>) {
        let waiter: CheckedContinuation<Result<[UInt8], any Error>, Never>? = state.withLock { state in
            switch state {
            case .waiting:
                state = .answered(result)
                return nil
            case .awaited(let continuation):
                state = .done
                return continuation
            case .answered, .done:
                return nil
            }
        }
        waiter?.resume(returning: result)
    }

    func wait(until deadline: ContinuousClock.Instant, method: String) async -> Result<[UInt8], any Error> {
        let started = ContinuousClock.now
        let timer = Task {
            try await Task.sleep(until: deadline, clock: .continuous)
            give(.failure(RPCError(.deadlineExceeded, "\(method) did not answer within \(deadline - started)")))
        }
        defer { timer.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready: Result<[UInt8], any Error>? = state.withLock { state in
                    if case .answered(let result) = state {
                        state = .done
                        return result
                    }
                    state = .awaited(continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            give(.failure(RPCError(.cancelled, "\(method) was cancelled by the caller")))
        }
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
