import Foundation
import LicensingRPC
import LicensingRuntime
import Testing

@Suite struct SettingsTests {
    func configFile(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "lm-settings-\(UUID().uuidString).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func flagsBeatEnvironmentBeatsFileBeatsDefaults() throws {
        let file = try configFile("""
            # comment
            listen = unix:/from/file.sock
            data-dir = "/from/file"
            log-level = debug
            metrics = 127.0.0.1:9000
            """)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let settings = try Settings.load(
            flags: ["listen": "127.0.0.1:7000", "log-level": nil],
            configFile: file,
            environment: ["LM_DATA_DIR": "/from/env", "LM_METRICS": "127.0.0.1:9100", "HOME": "/root"])
        #expect(try settings.endpoints("listen", default: []) == [.tcp(host: "127.0.0.1", port: 7000)])
        #expect(settings.dataDirectory == "/from/env")
        #expect(settings["metrics"] == "127.0.0.1:9100")
        #expect(settings["log-level"] == "debug")
    }

    @Test func defaultsNeedNoConfiguration() throws {
        let settings = try Settings.load(flags: [:], configFile: nil, environment: [:])
        #expect(settings.dataDirectory == "data")
        #expect(settings.defaultSocket("issuance") == .unix(path: "data/run/issuance.sock"))
        #expect(try settings.int("max-frame-bytes", default: 4 << 20) == 4 << 20)
        #expect(try settings.bool("dev", default: false) == false)
    }

    @Test func badValuesGetClearErrors() throws {
        let settings = Settings(values: ["port": "eighty", "dev": "maybe", "listen": "nowhere"])
        #expect(throws: (any Error).self) { try settings.int("port", default: 0) }
        #expect(throws: (any Error).self) { try settings.bool("dev", default: false) }
        #expect(throws: (any Error).self) { try settings.endpoints("listen", default: []) }
        let broken = try configFile("this line has no equals sign")
        defer { try? FileManager.default.removeItem(atPath: broken) }
        #expect(throws: (any Error).self) { try Settings.load(flags: [:], configFile: broken, environment: [:]) }
        #expect(throws: (any Error).self) { try Settings.load(flags: [:], configFile: "/no/such/file", environment: [:]) }
    }
}
