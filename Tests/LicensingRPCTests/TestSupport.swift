import Foundation
import LicensingRPC
import LicensingWire
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// Every RPC test runs one after another: they time things, and the 1,000-connection test
/// would otherwise starve the others on a 2-core machine.
@Suite(.serialized) enum RPCTests {}

let testLogger: Logger = {
    var logger = Logger(label: "rpc-tests")
    logger.logLevel = .critical
    return logger
}()

enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case unix, tcp
    var testDescription: String { rawValue }
}

struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out: \(what)" }
}

/// A fresh folder for Unix sockets (paths stay well under the 108-byte limit).
/// Not removed on deinit: an optimized build may end its lifetime before the test's end.
final class TempDirectory: Sendable {
    let path: String
    init() throws {
        var template = Array("/tmp/lmrpc-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestTimeout(what: "mkdtemp failed")
        }
        path = String(cString: made)
    }
    func socket(_ name: String = "rpc.sock") -> String { "\(path)/\(name)" }
    /// Call it from a `defer`: that also keeps the folder alive for the whole test.
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

extension Transport {
    func endpoint(in directory: TempDirectory) -> Endpoint {
        switch self {
        case .unix: return .unix(path: directory.socket())
        case .tcp: return .tcp(host: "127.0.0.1", port: 0)
        }
    }
}

/// Runs `body` against a server on `endpoints`, then stops the server by cancelling its
/// task and checks that it stops.
func withServer<T>(
    _ router: RPCRouter,
    on endpoints: [Endpoint],
    limits: FrameLimits = FrameLimits(),
    defaultTimeout: Duration = .seconds(30),
    _ body: ([Endpoint]) async throws -> T
) async throws -> T {
    let server = RPCServer(
        router: router,
        configuration: RPCServerConfiguration(endpoints: endpoints, limits: limits, defaultTimeout: defaultTimeout),
        logger: testLogger)
    let task = Task { try await server.run() }
    func stop() async {
        task.cancel()
        #expect(await finishes(task, within: .seconds(10)), "the server did not stop within 10 s of being cancelled")
    }
    do {
        let bound = try await server.listeningEndpoints
        let result = try await body(bound)
        await stop()
        return result
    } catch {
        await stop()
        throw error
    }
}

/// Whether `task` finishes within `limit` (without waiting longer if it does not).
func finishes<Success: Sendable, Failure: Error>(_ task: Task<Success, Failure>, within limit: Duration) async -> Bool {
    let done = Flag()
    Task {
        _ = await task.result
        done.set()
    }
    return await done.wait(within: limit)
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held.
func eventually(within limit: Duration, every step: Duration = .milliseconds(5), _ condition: () async -> Bool) async -> Bool {
    let end = ContinuousClock.now + limit
    while ContinuousClock.now < end {
        if await condition() { return true }
        try? await Task.sleep(for: step)
    }
    return await condition()
}

/// The value of `operation`, or `TestTimeout` if it takes longer than `limit`.
func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TestTimeout(what: what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// A flag a handler sets and a test waits for.
final class Flag: Sendable {
    private let state = Mutex(false)
    func set() { state.withLock { $0 = true } }
    var isSet: Bool { state.withLock { $0 } }
    func wait(within limit: Duration = .seconds(5)) async -> Bool { await eventually(within: limit) { isSet } }
}

final class Counter: Sendable {
    private let state = Mutex(0)
    @discardableResult func increment() -> Int { state.withLock { $0 += 1; return $0 } }
    var value: Int { state.withLock { $0 } }
}

final class Recorder<Value: Sendable>: Sendable {
    private let state = Mutex<[Value]>([])
    func append(_ value: Value) { state.withLock { $0.append(value) } }
    var values: [Value] { state.withLock { $0 } }
}

/// The code of an `RPCError`, or nil for any other outcome.
func rpcCode(_ body: () async throws -> Void) async -> StatusCode? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error.code
    } catch {
        Issue.record("expected an RPCError, got \(type(of: error)): \(error)")
        return nil
    }
}

// MARK: Frames

func frame(_ bytes: [UInt8]) -> [UInt8] {
    let length = UInt32(bytes.count)
    return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + bytes
}

func frame(_ envelope: Envelope) -> [UInt8] { frame(envelope.serializedBytes()) }

// MARK: Raw connections

/// Collects whatever the server sends and notes when the connection closes.
final class ByteCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let state = Mutex<(bytes: [UInt8], closed: Bool)>(([], false))

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        state.withLock { $0.bytes.append(contentsOf: buffer.readableBytesView) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLock { $0.closed = true }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server's EOF, should half-closure be on.
        if case .inputClosed = event as? ChannelEvent { state.withLock { $0.closed = true } }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var closed: Bool { state.withLock { $0.closed } }
}

/// A socket that speaks bytes, not envelopes, for feeding the server bad input.
final class RawConnection: Sendable {
    let channel: any Channel
    private let collector: ByteCollector
    private let consumed = Mutex(0)

    private init(channel: any Channel, collector: ByteCollector) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(_ endpoint: Endpoint) async throws -> RawConnection {
        let collector = ByteCollector()
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
        let channel: any Channel
        switch endpoint {
        case .unix(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
        case .tcp(let host, let port): channel = try await bootstrap.connect(host: host, port: port).get()
        }
        return RawConnection(channel: channel, collector: collector)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Shuts the sending side: the server reads EOF.
    func finishSending() async throws {
        try await channel.close(mode: .output).get()
    }

    func close() async {
        try? await channel.close().get()
    }

    var received: [UInt8] { collector.bytes }
    var isClosed: Bool { collector.closed }

    /// Whether the server closed the connection within `limit`.
    func closedByServer(within limit: Duration) async -> Bool {
        await eventually(within: limit) { collector.closed }
    }

    /// The next whole frame from the server as an Envelope, or nil if none came in time.
    func nextEnvelope(within limit: Duration = .seconds(5)) async throws -> Envelope? {
        var result: [UInt8]?
        _ = await eventually(within: limit) {
            let bytes = collector.bytes
            let start = consumed.withLock { $0 }
            guard bytes.count - start >= 4 else { return false }
            let length = bytes[start..<start + 4].reduce(0) { $0 << 8 | Int($1) }
            guard bytes.count - start - 4 >= length else { return false }
            result = Array(bytes[(start + 4)..<(start + 4 + length)])
            consumed.withLock { $0 = start + 4 + length }
            return true
        }
        guard let result else { return nil }
        return try Envelope(serializedBytes: result)
    }
}

/// A small deterministic generator, so a failing input can be reproduced from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
