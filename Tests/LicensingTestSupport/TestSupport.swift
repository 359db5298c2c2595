import Foundation
import LicensingRPC
import NIOPosix
import Logging
import ServiceLifecycle
import Synchronization

// What the test targets share: temporary folders, polling, small synchronised counters,
// a reproducible random generator, and servers started for the length of a test.

/// A fresh folder (short paths, for Unix sockets' 108-byte limit), removed by `remove()`
/// and when the last reference goes.
public final class TemporaryFolder: Sendable {
    public let path: String

    public init() {
        var template = Array("/tmp/lmtest-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    public func socket(_ name: String = "rpc.sock") -> String { "\(path)/\(name)" }

    /// Call it from a `defer` to keep the folder alive for the whole test.
    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    deinit { remove() }
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held. For what
/// arrives asynchronously (a feed, a metric, a closed connection), without betting on how
/// fast a loaded machine delivers it.
public func eventually(
    within limit: Duration = .seconds(15), every step: Duration = .milliseconds(5), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let end = ContinuousClock.now + limit
    while ContinuousClock.now < end {
        if try await condition() { return true }
        try? await Task.sleep(for: step)
    }
    return try await condition()
}

/// Whether `task` finishes within `limit` (without waiting longer if it does not).
public func finishes<Success: Sendable, Failure: Error>(_ task: Task<Success, Failure>, within limit: Duration) async -> Bool {
    let done = Flag()
    Task {
        _ = await task.result
        done.set()
    }
    return await done.wait(within: limit)
}

public struct TestTimeout: Error, CustomStringConvertible {
    public let what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out: \(what)" }
}

/// The value of `operation`, or `TestTimeout` if it takes longer than `limit`.
public func withTimeout<T: Sendable>(
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
public final class Flag: Sendable {
    private let state = Mutex(false)
    public init() {}
    public func set() { state.withLock { $0 = true } }
    public var isSet: Bool { state.withLock { $0 } }
    public func wait(within limit: Duration = .seconds(5)) async -> Bool { await eventually(within: limit) { isSet } }
}

public final class Counter: Sendable {
    private let state = Mutex(0)
    public init() {}
    @discardableResult public func increment() -> Int { state.withLock { $0 += 1; return $0 } }
    public var value: Int { state.withLock { $0 } }
}

public final class Recorder<Value: Sendable>: Sendable {
    private let state = Mutex<[Value]>([])
    public init() {}
    public func append(_ value: Value) { state.withLock { $0.append(value) } }
    public var values: [Value] { state.withLock { $0 } }
}

/// A small deterministic generator, so a failing input can be reproduced from its seed.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

public struct ServerDidNotStop: Error, CustomStringConvertible {
    public var description: String { "the server did not stop within 30 s of being cancelled" }
}

/// Serves `router` on `endpoints` for the length of `body`, which gets the bound endpoints
/// (a TCP port 0 resolved); then stops the server and fails if it does not stop.
public func withServer<T>(
    _ router: RPCRouter, on endpoints: [Endpoint], limits: FrameLimits = FrameLimits(), defaultTimeout: Duration = .seconds(30),
    logger: Logger = Logger(label: "test"), _ body: ([Endpoint]) async throws -> T
) async throws -> T {
    let server = RPCServer(
        router: router, configuration: RPCServerConfiguration(endpoints: endpoints, limits: limits, defaultTimeout: defaultTimeout),
        logger: logger)
    let task = Task { try await server.run() }
    // Stopped before returning, as a supervisor would before starting the next process: a
    // server still stopping removes its socket file, and a test may start the next server on
    // the same path right away.
    func stop() async throws {
        task.cancel()
        // Longer than the server's own 10 s drain deadline (after which it closes what is
        // still open), with room for a loaded machine: the point is that it stops.
        guard await finishes(task, within: .seconds(30)) else { throw ServerDidNotStop() }
    }
    do {
        let bound = try await server.listeningEndpoints
        let result = try await body(bound)
        try await stop()
        return result
    } catch {
        try? await stop()
        throw error
    }
}

/// Serves `router` in this process for the length of `body`, which gets a client of it:
/// the service meets what a socket would give it (requests decoded and checked,
/// interceptors, deadlines, statuses), with nothing bound. `folder` is where the service's
/// files live; socket behaviour has its own tests (`withServer(_:on:)`).
public func withServer<T>(
    _ router: RPCRouter, in folder: TemporaryFolder, name: String, _ body: (RPCClient) async throws -> T
) async throws -> T {
    let server = InProcessServer(name, router: router, executor: testServerExecutor, logger: Logger(label: "test.\(name)"))
    return try await body(RPCClient(endpoint: .inProcess(server)))
}

/// Runs a service's parts in the background, leaving out its socket servers: the test
/// serves the service's router in-process (``InProcessServer``) instead. Cancel the task to stop them.
public func runInBackground(_ parts: [any Service]) -> Task<Void, any Error> {
    let background = parts.filter { !($0 is RPCServer) }
    return Task {
        try await withThrowingDiscardingTaskGroup { group in
            for part in background { group.addTask { try await part.run() } }
        }
    }
}

/// Runs a service's parts (see ``runInBackground(_:)``) for the length of `body`.
public func whileRunning<T>(_ parts: [any Service], _ body: () async throws -> T) async throws -> T {
    let running = runInBackground(parts)
    defer { running.cancel() }
    return try await body()
}

/// Where in-process servers in tests run their handlers: an event loop, as a socket server
/// does, so a test's own tasks and the service's handlers do not queue on the same few
/// threads of the global executor (on a busy 2-core machine that queueing pushed calls past
/// their timeouts).
public var testServerExecutor: any TaskExecutor { EventLoopTaskExecutor(MultiThreadedEventLoopGroup.singleton.any()) }

/// Certificates made by deploy/make-certs into `folder`: a CA (ca.pem), a server certificate
/// for 127.0.0.1 and localhost (server.pem, server.key) and a client certificate (client.pem,
/// client.key) for mutual TLS.
public func makeCertificates(in folder: String) throws {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/make-certs").standardized
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = [script.path, folder]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw RPCError(.internal, "deploy/make-certs failed") }
}
