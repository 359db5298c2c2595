import Foundation
import LicensingRPC
import LicensingWire
import Testing

/// A service given a setting it cannot use stops at once and says which and why.
@Suite struct StartupTests {
    @Test(arguments: [["--event-loops", "0"], ["--event-loops", "many"], ["--event-loops", "1000"]])
    func aServiceRefusesEventLoopsItCannotRun(_ arguments: [String]) async throws {
        let folder = NSTemporaryDirectory() + "lm-startup-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (status, output) = try await Stack.run("license-usage", ["--data-dir", folder, "--dev"] + arguments)
        #expect(status != 0, "\(output)")
        #expect(output.contains("event-loops"), "\(output)")
    }
}

/// `--migrate`: the upgrade step applies a version's schema without starting the service.
@Suite(.serialized) struct MigrateTests {
    @Test func migrateAppliesTheSchemaOnceAndTheServiceThenStartsOnIt() async throws {
        let stack = try Stack()
        for service in ["issuance", "validation", "usage", "reporting", "gateway"] {
            let (status, output) = try await Stack.run("license-\(service)", ["--migrate", "--dev", "--data-dir", stack.folder])
            #expect(status == 0, "\(output)")
            #expect(output.contains("\(stack.folder)/\(service).sqlite: applied "), "\(output)")
            #expect(output.contains("v1"), "the migrations are listed by name: \(output)")
            let (again, repeated) = try await Stack.run("license-\(service)", ["--migrate", "--dev", "--data-dir", stack.folder])
            #expect(again == 0 && repeated.contains("is up to date"), "\(repeated)")
        }
        let (status, output) = try await Stack.run("license-console", ["--migrate", "--dev", "--data-dir", stack.folder])
        #expect(status == 0 && output.contains("keeps no database"), "\(output)")
        // The services start on the migrated databases, and a migration is refused while one runs.
        try await stack.startAll()
        let (refused, message) = try await Stack.run("license-issuance", ["--migrate", "--dev", "--data-dir", stack.folder])
        #expect(refused != 0 && message.contains("already running"), "\(message)")
        let gateway = stack.gatewayClient()
        _ = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Migrated", code: "MIGRATED"))
        await gateway.close()
    }

    @Test func aDatabaseFromANewerVersionIsRefusedWithWhatToDo() async throws {
        let folder = NSTemporaryDirectory() + "lm-migrate-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try await Stack.run("license-usage", ["--migrate", "--dev", "--data-dir", folder])
        let (_, added) = try await Stack.run(
            "/usr/bin/python3",
            ["-c", "import sqlite3; c = sqlite3.connect('\(folder)/usage.sqlite'); c.execute(\"INSERT INTO grdb_migrations VALUES ('v99: from the future')\"); c.commit()"],
            absolute: true)
        #expect(added.isEmpty, "\(added)")
        let (status, output) = try await Stack.run("license-usage", ["--migrate", "--dev", "--data-dir", folder])
        #expect(status != 0, "\(output)")
        #expect(output.contains("was written by a newer version of this service") && output.contains("v99: from the future"), "\(output)")
    }
}

/// One copy of a service per data folder, and what it writes is its owner's alone.
@Suite(.serialized) struct DataFolderTests {
    @Test func aSecondCopyOnTheSameDataFolderRefusesToStartAndTheFirstKeepsServing() async throws {
        let stack = try Stack()
        try await stack.startAll()
        for service in ["issuance", "validation", "usage", "reporting", "gateway"] {
            let (status, output) = try await Stack.run("license-\(service)", ["--dev", "--data-dir", stack.folder])
            #expect(status != 0, "a second license-\(service) started: \(output)")
            #expect(output.contains("license-\(service) is already running on the data folder \(stack.folder) (process "), "\(output)")
        }
        // The first copies still own their sockets and answer.
        for service in ["issuance", "validation", "usage", "reporting", "gateway"] {
            let client = RPCClient(endpoint: stack.endpoint(service))
            #expect(try await client.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(10)).status == .serving, "\(service)")
            await client.close()
        }
        // After a stop, a new copy starts on the same folder.
        await stack.stop("usage")
        try stack.start("usage")
        try await stack.waitUntilServing("usage")
    }

    @Test func databasesAndTheDataFolderAreTheOwnersAlone() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient()
        _ = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Modes", code: "MODES"))
        await gateway.close()
        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
        }
        for service in ["issuance", "validation", "usage", "reporting", "gateway"] {
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: "\(stack.folder)/\(service).sqlite\(suffix)") {
                #expect(try mode("\(stack.folder)/\(service).sqlite\(suffix)") == 0o600, "\(service).sqlite\(suffix)")
            }
        }
        #expect(try mode("\(stack.folder)/run") == 0o700)
        #expect(try mode("\(stack.folder)/secrets/master-key") == 0o600)
    }
}

/// Settings mistakes stop a service at once, name the mistake, and leave nothing behind.
@Suite struct SettingsStartupTests {
    static func folder() -> String { NSTemporaryDirectory() + "lm-settings-" + UUID().uuidString }

    @Test func anUnknownKeyInTheConfigurationFileIsRefused() async throws {
        let folder = Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let config = "\(folder)/usage.conf"
        try "log-level = info\n# metrics off\nmetrix = 127.0.0.1:9100\n".write(toFile: config, atomically: true, encoding: .utf8)
        let (status, output) = try await Stack.run("license-usage", ["--config", config, "--data-dir", folder, "--dev"])
        #expect(status != 0)
        #expect(output.contains("\(config):3: unknown setting 'metrix'"), "\(output)")
        #expect(output.contains("metrics"), "the message lists the settings the service reads: \(output)")
        #expect(!FileManager.default.fileExists(atPath: "\(folder)/usage.sqlite"), "a failed start left a database behind")
    }

    /// The same with the metrics endpoint on: the start fails cleanly (exit 64 with the
    /// message), it does not crash on the endpoint it never ran.
    @Test func anUnknownKeyStopsAServiceWithMetricsOnCleanly() async throws {
        let folder = Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let config = "\(folder)/usage.conf"
        try "metrics = 127.0.0.1:0\nmetrix = 127.0.0.1:9100\n".write(toFile: config, atomically: true, encoding: .utf8)
        let (status, output) = try await Stack.run("license-usage", ["--config", config, "--data-dir", folder, "--dev"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("unknown setting 'metrix'") && !output.contains("Fatal error"), "\(output)")
    }

    @Test func aMissingSecretStopsIssuanceWithoutAHalfMadeDatabase() async throws {
        let folder = Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (status, output) = try await Stack.run("license-issuance", ["--data-dir", folder], environment: ["LM_DEV": "false"])
        #expect(status != 0)
        #expect(output.contains("--dev"), "\(output)")
        for suffix in ["", "-wal", "-shm"] {
            #expect(!FileManager.default.fileExists(atPath: "\(folder)/issuance.sqlite\(suffix)"))
        }
    }
}

extension SettingsStartupTests {
    @Test(arguments: [
        ("license-validation", "LM_SEAT_TTL_SECONDS", "-5", "setting seat-ttl-seconds = -5 is out of range: it takes 10 to 86400"),
        ("license-validation", "LM_OFFLINE_MAX_DAYS", "100000", "setting offline-max-days = 100000 is out of range: it takes 1 to 3650"),
        ("license-issuance", "LM_SCHEDULER_INTERVAL_SECONDS", "0", "setting scheduler-interval-seconds = 0 is out of range: it takes 1 to 3600"),
        ("license-usage", "LM_MAX_FRAME_BYTES", "10", "setting max-frame-bytes = 10 is out of range: it takes 1024 to 67108864"),
    ])
    func aSettingOutOfRangeStopsTheStartAndSaysTheRange(_ service: String, _ variable: String, _ value: String, _ message: String) async throws {
        let folder = Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (status, output) = try await Stack.run(service, ["--data-dir", folder, "--dev"], environment: [variable: value])
        #expect(status != 0)
        #expect(output.contains(message), "\(output)")
    }
}
