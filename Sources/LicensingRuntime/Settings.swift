import ArgumentParser
import Foundation
import LicensingRPC

/// A service's configuration, from (highest first) command-line flags, `LM_*` environment
/// variables, an optional `key = value` file, and defaults that run locally with no
/// configuration at all.
public struct Settings: Sendable {
    private var values: [String: String]

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
        if let configFile {
            values = try parseFile(configFile)
        }
        for (name, value) in environment where name.hasPrefix("LM_") {
            let key = name.dropFirst(3).lowercased().replacingOccurrences(of: "_", with: "-")
            values[key] = value
        }
        for case (let key, let value?) in flags {
            values[key] = value
        }
        return Settings(values: values)
    }

    static func parseFile(_ path: String) throws -> [String: String] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read configuration file \(path): \(error.localizedDescription)")
        }
        var values: [String: String] = [:]
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw ValidationError("\(path):\(number + 1): expected key = value")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            values[key] = value
        }
        return values
    }

    public subscript(key: String) -> String? {
        get { values[key] }
        set { values[key] = newValue }
    }

    public func string(_ key: String, default fallback: String) -> String {
        values[key] ?? fallback
    }

    public func int(_ key: String, default fallback: Int) throws -> Int {
        guard let text = values[key] else { return fallback }
        guard let value = Int(text) else { throw ValidationError("setting \(key) = \"\(text)\" is not a number") }
        return value
    }

    public func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let text = values[key] else { return fallback }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ValidationError("setting \(key) = \"\(text)\" is not true or false")
        }
    }

    public func endpoints(_ key: String, default fallback: [Endpoint]) throws -> [Endpoint] {
        guard let text = values[key] else { return fallback }
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
        values["data-dir"] ?? "data"
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

    @Option(help: "Local development mode: generate missing secrets into the data folder.")
    public var dev: Bool?

    @Option(help: "Event-loop threads serving connections (default: one per core).")
    public var eventLoops: Int?

    @Option(help: "TLS certificate chain (PEM) for TCP listeners.")
    public var tlsCert: String?

    @Option(help: "TLS private key (PEM) for TCP listeners.")
    public var tlsKey: String?

    @Option(help: "CA (PEM) whose client certificates TCP listeners require (mutual TLS).")
    public var tlsClientCa: String?

    public init() {}

    public var flags: [String: String?] {
        [
            "data-dir": dataDir, "listen": listen, "metrics": metrics, "log-level": logLevel, "dev": dev.map { String($0) },
            "tls-cert": tlsCert, "tls-key": tlsKey, "tls-client-ca": tlsClientCa, "event-loops": eventLoops.map { String($0) },
        ]
    }
}
