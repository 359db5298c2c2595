import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LicensingRPC
import NIOConcurrencyHelpers
import LicensingWire
import Testing

/// The five executables started as real processes on Unix sockets in a temporary folder.
final class Stack: @unchecked Sendable {
    // @unchecked: `processes` is touched only by the test that owns the stack, one call at a time.
    let folder: String
    private var processes: [String: Process] = [:]
    private static let services = ["issuance", "validation", "usage", "reporting", "integrations", "gateway"]

    init() throws {
        folder = NSTemporaryDirectory() + "lm-e2e-" + UUID().uuidString.prefix(8)
        // The services make run/ themselves (mode 0700).
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    /// Whether this stack holds one of the slots (see `StackSlots`).
    private var holdsSlot = false

    deinit {
        defer { if holdsSlot { StackSlots.release() } }
        // Waits for the services to stop: a test's stack is gone before the next starts,
        // which keeps this 2-core machine from running more stacks at once than it can.
        for process in processes.values where process.isRunning { process.terminate() }
        for process in processes.values { process.waitUntilExit() }
        // LM_KEEP=1 keeps the folder (databases, logs) for a look after a failed test.
        if ProcessInfo.processInfo.environment["LM_KEEP"] == nil { try? FileManager.default.removeItem(atPath: folder) }
    }

    /// Where `swift build` put the executables: next to this test bundle.
    static var binaries: URL {
        var candidate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 {
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("license-gateway").path) { return candidate }
            candidate = candidate.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug").standardized
    }

    /// Runs one of the built executables (or, with `absolute`, any program) to its end: its
    /// exit status and everything it printed.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:], absolute: Bool = false) async throws -> (Int32, String) {
        // Waiting for a process blocks a thread: not one of the few the tests' tasks share.
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                let process = Process()
                process.executableURL = absolute ? URL(fileURLWithPath: executable) : binaries.appendingPathComponent(executable)
                process.arguments = arguments
                process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
                let pipe = Pipe()
                process.standardOutput = pipe
                process.standardError = pipe
                do {
                    try process.run()
                    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    process.waitUntilExit()
                    continuation.resume(returning: (process.terminationStatus, output))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    func endpoint(_ service: String) -> Endpoint { .unix(path: "\(folder)/run/\(service).sock") }

    /// licensectl against this stack's gateway (or `gateway`) with the admin key: its exit
    /// status and everything it printed.
    func ctl(_ arguments: [String], gateway: String? = nil) async throws -> (Int32, String) {
        try await Self.run("licensectl", arguments + ["--gateway", gateway ?? "unix:\(folder)/run/gateway.sock"], environment: ["LM_API_KEY": adminKey])
    }

    /// licensectl with `--json`, expected to succeed: its answer.
    func ctlJSON(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: Any] {
        let (status, output) = try await ctl(arguments + ["--json"])
        #expect(status == 0, "\(arguments): \(output)", sourceLocation: sourceLocation)
        return (try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]) ?? [:]
    }

    /// The admin API key the gateway made on its first start (development mode).
    var adminKey: String {
        ((try? String(contentsOfFile: "\(folder)/secrets/admin-api-key", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A client of the gateway that sends the admin key (or `apiKey`) with every call.
    func gatewayClient(apiKey: String? = nil, connections: Int = 2, connectTimeout: Duration = .seconds(1)) -> RPCClient {
        RPCClient(
            endpoint: endpoint("gateway"),
            configuration: RPCClientConfiguration(connections: connections, connectTimeout: connectTimeout, metadata: [RPCMetadata.apiKey: apiKey ?? adminKey]))
    }

    /// Environment variables a service starts with (settings as LM_* variables), by service.
    var environment: [String: [String: String]] = [:]

    func start(_ service: String, extraArguments: [String] = []) throws {
        let process = Process()
        process.executableURL = Self.binaries.appendingPathComponent("license-\(service)")
        process.arguments = ["--dev", "--data-dir", folder] + extraArguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment[service] ?? [:]) { $1 }
        if service == "gateway" {
            // Port 0: tests never collide with a stack running on the default port.
            process.arguments! += ["--listen", "unix:\(folder)/run/gateway.sock,127.0.0.1:0"]
        }
        if service == "integrations" {
            process.arguments! += ["--http-listen", "127.0.0.1:0"]
        }
        let path = "\(folder)/\(service).log"
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        // The child has its own descriptor: the test keeps none open on the folder (a test
        // may unmount it once the services stop).
        try log.close()
        processes[service] = process
    }

    func startAll(extraArguments: [String: [String]] = [:]) async throws {
        if !holdsSlot {
            await StackSlots.acquire()
            holdsSlot = true
        }
        for service in Self.services { try start(service, extraArguments: extraArguments[service] ?? []) }
        for service in Self.services { try await waitUntilServing(service) }
    }

    func waitUntilServing(_ service: String) async throws {
        let client = RPCClient(endpoint: endpoint(service))
        defer { Task { await client.close() } }
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(60) {
            if (try? await client.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(1))) != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RPCError(.unavailable, "\(service) did not start; log: \(log(service))")
    }

    /// Waits until the gateway sees a restarted service again (it fails fast until then).
    func waitUntilGatewaySees(_ service: String) async throws {
        let gateway = gatewayClient()
        defer { Task { await gateway.close() } }
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(10) {
            let health = try? await gateway.call(GatewayMethods.health, HealthCheckRequest(), timeout: .seconds(2))
            if health?.components.first(where: { $0.name == service })?.code == .ok { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RPCError(.unavailable, "the gateway does not see \(service) again")
    }

    /// Sends SIGTERM and returns the exit status.
    @discardableResult
    func stop(_ service: String) async -> Int32 {
        guard let process = processes[service] else { return -1 }
        process.terminate()
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                process.waitUntilExit()
                continuation.resume(returning: process.terminationStatus)
            }
        }
    }

    /// Stops every service that runs (SIGTERM), waiting for each to exit.
    func stopAll() async {
        for service in processes.keys where processes[service]?.isRunning == true { await stop(service) }
    }

    /// SIGKILL: no shutdown code runs, as in a crash or power loss of the process.
    /// The process id of a running service.
    func pid(_ service: String) -> Int32? {
        processes[service].flatMap { $0.isRunning ? $0.processIdentifier : nil }
    }

    /// A running service's resident memory in KiB (VmRSS), from /proc.
    func residentKiB(_ service: String) -> Int? {
        guard let pid = pid(service), let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
        return line.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
    }

    func kill(_ service: String) {
        guard let process = processes[service] else { return }
        _ = Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Starts license-console on a free port with its own CONSOLE key (made with the admin
    /// key); returns its address. Plain HTTP, cookies without Secure: a loopback test setup.
    func startConsole() async throws -> String {
        let admin = gatewayClient()
        defer { Task { await admin.close() } }
        let made = try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "console", role: .console))
        let file = "\(folder)/secrets/console-api-key"
        FileManager.default.createFile(atPath: file, contents: Data((made.secret + "\n").utf8), attributes: [.posixPermissions: 0o600])
        environment["console", default: [:]]["LM_SECURE_COOKIES"] = "false"
        try start("console", extraArguments: ["--http-listen", "127.0.0.1:0"])
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let lines = log("console").split(separator: "\n").filter { $0.contains("console ready") }
            if let line = lines.last, let range = line.range(of: "address="),
               let port = line[range.upperBound...].split(separator: " ").first?.split(separator: ":").last {
                return "http://127.0.0.1:\(port)"
            }
            if processes["console"]?.isRunning == false { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RPCError(.unavailable, "license-console did not start; log: \(log("console"))")
    }

    /// Where license-integrations listens for webhooks, from its log (its last start).
    var integrationsHTTP: String? {
        let lines = log("integrations").split(separator: "\n").filter { $0.contains("webhook listener ready") }
        guard let line = lines.last, let range = line.range(of: "address=") else { return nil }
        // "[IPv4]127.0.0.1/127.0.0.1:PORT"
        let address = line[range.upperBound...].split(separator: " ").first.map(String.init) ?? ""
        guard let port = address.split(separator: ":").last else { return nil }
        return "http://127.0.0.1:\(port)"
    }

    func log(_ service: String) -> String {
        (try? String(contentsOfFile: "\(folder)/\(service).log", encoding: .utf8)) ?? ""
    }
}

/// At most two stacks run at once: each is six processes, and on this 2-core machine more
/// of them starting together take longer to start than a test waits.
enum StackSlots {
    static let limit = 2
    private static let state = SharedValue((inUse: 0, waiting: [CheckedContinuation<Void, Never>]()))

    static func acquire() async {
        await withCheckedContinuation { continuation in
            let granted = state.withLock { state -> Bool in
                guard state.inUse < limit else {
                    state.waiting.append(continuation)
                    return false
                }
                state.inUse += 1
                return true
            }
            if granted { continuation.resume() }
        }
    }

    static func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.inUse -= 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}

/// Every item of a paged list: asks for each page with the previous page's token until a
/// page comes back without one.
func allPages<Item>(_ page: (_ token: String) async throws -> (items: [Item], next: String)) async throws -> [Item] {
    var items: [Item] = []
    var token = ""
    repeat {
        let (more, next) = try await page(token)
        items += more
        token = next
    } while !token.isEmpty
    return items
}
