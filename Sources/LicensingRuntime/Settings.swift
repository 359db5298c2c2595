import ArgumentParser
import Foundation
import LicensingRPC
import Synchronization

/// The keys a service read, shared by every copy of its settings.
private final class AskedKeys: Sendable {
    private let state = Mutex<Set<String>>([])
    func insert(_ key: String) { state.withLock { _ = $0.insert(key) } }
    var keys: Set<String> { state.withLock { $0 } }
}

/// A service's configuration, from (highest first) command-line flags, `LM_*` environment
/// variables, an optional `key = value` file, and defaults that run locally with no
/// configuration at all.
public struct Settings: Sendable {
    private var values: [String: String]
    /// Keys read from the configuration file, with the line each came from.
    private var fileKeys: [String: (file: String, line: Int)] = [:]
    /// Every key a service asked for: a key in the file that none asked for is a typo.
    private let asked = AskedKeys()

    public init(values: [String: String] = [:]) {
        self.values = values
    }

    /// Merges the sources. `flags` holds the flags given (nil = not given), by key.
    public static func load(
        flags: [String: String?],
        configFile: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> Settings {
        var values: [String: String] = [:]
        var fileKeys: [String: (file: String, line: Int)] = [:]
        if let configFile {
            for (key, entry) in try parseFile(configFile) {
                values[key] = entry.value
                fileKeys[key] = (configFile, entry.line)
            }
        }
        for (name, value) in environment where name.hasPrefix("LM_") {
            let key = name.dropFirst(3).lowercased().replacingOccurrences(of: "_", with: "-")
            values[key] = value
        }
        for case (let key, let value?) in flags {
            values[key] = value
        }
        var settings = Settings(values: values)
        settings.fileKeys = fileKeys
        return settings
    }

    /// Refuses a configuration file that names a setting the service never asked for
    /// (a typo such as `metrix = …` would otherwise be silently ignored). Call once the
    /// service has read its settings.
    public func checkNoUnknownKeys() throws {
        let asked = self.asked.keys
        let unknown = fileKeys.filter { !asked.contains($0.key) }.sorted { $0.value.line < $1.value.line }
        guard let (key, place) = unknown.first else { return }
        throw ValidationError(
            "\(place.file):\(place.line): unknown setting '\(key)'; this service reads: \(asked.sorted().joined(separator: ", "))")
    }

    static func parseFile(_ path: String) throws -> [String: (value: String, line: Int)] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read configuration file \(path): \(error.localizedDescription)")
        }
        var values: [String: (value: String, line: Int)] = [:]
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw ValidationError("\(path):\(number + 1): expected key = value")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            values[key] = (value, number + 1)
        }
        return values
    }

    /// The value of a setting, noting that the service reads it.
    private func value(_ key: String) -> String? {
        asked.insert(key)
        return values[key]
    }

    public subscript(key: String) -> String? {
        get { value(key) }
        set { values[key] = newValue }
    }

    public func string(_ key: String, default fallback: String) -> String {
        value(key) ?? fallback
    }

    public func int(_ key: String, default fallback: Int) throws -> Int {
        guard let text = value(key) else { return fallback }
        guard let value = Int(text) else { throw ValidationError("setting \(key) = \"\(text)\" is not a number") }
        return value
    }

    /// A number that must lie in `range`; the message names the setting and the range.
    public func int(_ key: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
        let value = try int(key, default: fallback)
        guard range.contains(value) else {
            throw ValidationError("setting \(key) = \(value) is out of range: it takes \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    public func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let text = value(key) else { return fallback }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ValidationError("setting \(key) = \"\(text)\" is not true or false")
        }
    }

    public func endpoints(_ key: String, default fallback: [Endpoint]) throws -> [Endpoint] {
        guard let text = value(key) else { return fallback }
        return try text.split(separator: ",").map { (item: Substring) throws -> Endpoint in
            do {
                return try Endpoint(parsing: String(item).trimmingCharacters(in: .whitespaces))
            } catch {
                throw ValidationError("setting \(key): \(error)")
            }
        }
    }

    public func endpoint(_ key: String, default fallback: Endpoint) throws -> Endpoint {
        try endpoints(key, default: [fallback]).first ?? fallback
    }

    // MARK: Shared settings

    /// Where the service keeps its database, secrets and sockets (`./data` by default).
    public var dataDirectory: String {
        value("data-dir") ?? "data"
    }

    /// The Unix socket a service listens on by default: `<data>/run/<service>.sock`.
    public func defaultSocket(_ service: String) -> Endpoint {
        .unix(path: "\(dataDirectory)/run/\(service).sock")
    }
}

/// Flags every service executable accepts.
public struct RuntimeOptions: ParsableArguments {
    @Option(help: "Configuration file of `key = value` lines (keys as the long flags).")
    public var config: String?

    @Option(help: "Folder for the database, secrets and sockets (default: ./data).")
    public var dataDir: String?

    @Option(help: "Comma-separated endpoints to serve: unix:/path or host:port.")
    public var listen: String?

    @Option(help: "Serve Prometheus metrics over HTTP on host:port (off by default).")
    public var metrics: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    public var logLevel: String?

    @Flag(help: "Local development mode: generate missing secrets into the data folder (or LM_DEV=true).")
    public var dev: Bool = false

    @Option(help: "Event-loop threads serving connections (default: one per core).")
    public var eventLoops: Int?

    @Option(help: "TLS certificate chain (PEM) for TCP listeners.")
    public var tlsCert: String?

    @Option(help: "TLS private key (PEM) for TCP listeners.")
    public var tlsKey: String?

    @Option(help: "CA (PEM) whose client certificates TCP listeners require (mutual TLS).")
    public var tlsClientCa: String?

    @Flag(help: "Apply this version's database migrations, list them, and exit (the upgrade step before starting a new version).")
    public var migrate: Bool = false

    public init() {}

    public var flags: [String: String?] {
        [
            "data-dir": dataDir, "listen": listen, "metrics": metrics, "log-level": logLevel, "dev": dev ? "true" : nil,
            "tls-cert": tlsCert, "tls-key": tlsKey, "tls-client-ca": tlsClientCa, "event-loops": eventLoops.map { String($0) },
        ]
    }
}
