import Foundation
import LicensingCore
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

    /// Where signing keys live: each missing or wrong PKCS#11 setting is named, with what to set.
    @Test func signingKeyCustodySettingsSayWhatIsMissing() throws {
        let master = try MasterKey(bytes: Array(repeating: 7, count: 32))
        func message(_ values: [String: String]) -> String {
            do {
                _ = try SigningCustody.from(settings: Settings(values: values), masterKey: master)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(message([:]) == "accepted")
        #expect(message(["signing-keys": "database"]) == "accepted")
        #expect(message(["signing-keys": "hsm"]).contains("signing-keys must be database or pkcs11"))
        #expect(message(["signing-keys": "pkcs11"]).contains("needs pkcs11-module"))
        #expect(message(["signing-keys": "pkcs11", "pkcs11-module": "/m.so"]).contains("pkcs11-token must name the token"))
        #expect(message(["signing-keys": "pkcs11", "pkcs11-module": "/m.so", "pkcs11-token": "t"]).contains("PIN"))
        #expect(message(["signing-keys": "pkcs11", "pkcs11-module": "/m.so", "pkcs11-token": "t", "pkcs11-pin-file": "/no/such/pin"]).contains("cannot read"))
        // A module that is not there: the service starts, and signing says why it cannot.
        let custody = try SigningCustody.from(
            settings: Settings(values: ["signing-keys": "pkcs11", "pkcs11-module": "/no/such/module.so", "pkcs11-token": "t", "pkcs11-pin": "1"]), masterKey: master)
        do {
            _ = try custody.newKey()
            Issue.record("a key was made without a module")
        } catch let error as RPCError {
            #expect(error.code == .unavailable && error.message.contains("LM_P11_MODULE_LOAD_FAILED"), "\(error)")
        }
    }
}
