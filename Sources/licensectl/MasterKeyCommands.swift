import ArgumentParser
import Foundation
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

/// Master-key rotation: the key file holds versions, oldest first, and the last one seals.
/// Add a version (`add`), make the services seal everything again under it (`rotate`,
/// online), and remove an old one once nothing needs it (`retire`: no stored value, and no
/// backup kept in the folders named).
struct MasterKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "master-key", abstract: "Rotate the master key that seals secrets at rest (operators).",
        discussion: """
            1. licensectl master-key add --key-file FILE       (a new newest version; copy the file to every host)
            2. licensectl master-key rotate                     (services read it again and re-seal, online)
            3. licensectl master-key retire VERSION --key-file FILE --backups DIR
               (refused while a service value or a kept backup still needs VERSION)
            """,
        subcommands: [Status.self, Add.self, Rotate.self, Retire.self])

    static let services: [(String, WireMethod<RewrapSecretsRequest, RewrapSecretsResponse>)] = [
        ("issuance", IssuanceMethods.rewrapSecrets), ("validation", ValidationMethods.rewrapSecrets),
    ]

    /// Every service's answer; exit 2 with the error of the first that fails.
    static func ask(_ global: GlobalOptions, rewrap: Bool) async throws -> [RewrapSecretsResponse] {
        let client = try global.client()
        defer { Task { await client.close() } }
        var answers: [RewrapSecretsResponse] = []
        for (service, method) in services {
            do {
                answers.append(try await client.call(method, RewrapSecretsRequest(rewrap: rewrap), timeout: .seconds(Int64(max(global.timeout, 300)))))
            } catch let error as RPCError {
                Output.error("\(service): \(error.code): \(error.message)")
                throw ExitCode(2)
            }
        }
        return answers
    }

    static func describe(_ answers: [RewrapSecretsResponse]) -> String {
        answers.map { answer in
            let uses = answer.uses.map { "\($0.version.isEmpty ? "(unversioned)" : $0.version): \($0.sealed)" }.joined(separator: ", ")
            return "\(answer.service)  current \(answer.currentVersion)  loaded \(answer.versions.joined(separator: ", "))"
                + (answer.rewrapped > 0 ? "  re-sealed \(answer.rewrapped)" : "") + "  sealed values: \(uses.isEmpty ? "none" : uses)"
        }.joined(separator: "\n")
    }

    /// The versions named by the backups under `folders` (each a backup, or a folder of them).
    static func backupVersions(_ folders: [String]) -> [(backup: String, version: String)] {
        folders.flatMap { folder -> [(String, String)] in
            let candidates = [folder] + ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted().map { "\(folder)/\($0)" }
            return candidates.compactMap { path in
                guard let data = FileManager.default.contents(atPath: "\(path)/manifest.json"),
                    let manifest = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let version = manifest["master_key_id"] as? String
                else { return nil }
                return (path, version)
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Which master-key versions the services hold and still need, and which the backups need.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Backup folders to check (a backup, or the folder of a schedule's backups); repeatable.") var backups: [String] = []

        func run() async throws {
            let answers = try await MasterKeyCommand.ask(global, rewrap: false)
            print(MasterKeyCommand.describe(answers))
            for (backup, version) in MasterKeyCommand.backupVersions(backups) { print("backup \(backup) needs \(version)") }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Append a new random version to the key file; it seals from the next rotate on.",
            discussion: """
                With --pkcs11-key LABEL the version is written wrapped by that AES key of the PKCS#11 token \
                (made in the token if it has none; LM_PKCS11_MODULE, LM_PKCS11_TOKEN, LM_PKCS11_PIN_FILE name \
                the token): the file alone then opens nothing.
                """)
        @Option(help: "The master key file (one version per line, oldest first).") var keyFile: String
        @Option(help: "Wrap the new version with this AES key of the PKCS#11 token.") var pkcs11Key: String?

        func run() async throws {
            let text = (try? String(contentsOfFile: keyFile, encoding: .utf8)) ?? ""
            _ = try Secrets.parseVersions(text, token: try BackupFormat.token())
            let stamp = "  # added \(ISODate.format(Int64(Date().timeIntervalSince1970)))\n"
            let line: String
            let version: [UInt8]
            if let label = pkcs11Key {
                guard let token = try BackupFormat.token() else {
                    throw ValidationError("--pkcs11-key needs the token: set LM_PKCS11_MODULE, LM_PKCS11_TOKEN and LM_PKCS11_PIN_FILE")
                }
                (line, version) = try Secrets.wrappedVersionLine(label: label, token: token)
            } else {
                version = KeyHashSecret.generateBytes()
                line = Hex.encode(version)
            }
            try Secrets.replacePrivate((text.isEmpty || text.hasSuffix("\n") ? text : text + "\n") + line + stamp, at: keyFile)
            print("added master key version \(MasterKey.versionID(of: version)) to \(keyFile); copy the file to every host, then run licensectl master-key rotate")
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Services read the key file again and seal every value again under its newest version, online.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let answers = try await MasterKeyCommand.ask(global, rewrap: true)
            print(MasterKeyCommand.describe(answers))
            let currents = Set(answers.map(\.currentVersion))
            guard currents.count == 1 else {
                Output.error("the services seal with different versions (\(currents.sorted().joined(separator: ", "))): give every host the same key file, then rotate again")
                throw ExitCode(1)
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove an old version from the key file, once no service value and no kept backup needs it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The version id (as status prints it).") var version: String
        @Option(help: "The master key file to remove it from.") var keyFile: String
        @Option(help: "Backup folders the retention keeps; repeatable. A backup made with the version keeps it.") var backups: [String] = []

        func run() async throws {
            guard let text = try? String(contentsOfFile: keyFile, encoding: .utf8) else { throw ValidationError("cannot read the master key file \(keyFile)") }
            let token = try BackupFormat.token()
            let versions = try Secrets.parseVersions(text, token: token)
            let ids = versions.map(MasterKey.versionID(of:))
            guard ids.contains(version) else { throw ValidationError("\(keyFile) holds no version \(version); it holds \(ids.joined(separator: ", "))") }
            guard ids.last != version else { throw ValidationError("\(version) is the newest version, the one that seals: add a new one and rotate first") }
            let needing = MasterKeyCommand.backupVersions(backups).filter { $0.version == version }.map(\.backup)
            guard needing.isEmpty else {
                Output.error("not retired: \(needing.count) kept backup(s) were made with \(version) and would not restore without it: \(needing.joined(separator: ", ")); retire it once the retention has removed them")
                throw ExitCode(1)
            }
            let answers = try await MasterKeyCommand.ask(global, rewrap: false)
            let stillSealed = answers.flatMap { answer in answer.uses.filter { $0.version == version && $0.sealed > 0 }.map { "\(answer.service): \($0.sealed)" } }
            guard stillSealed.isEmpty else {
                Output.error("not retired: values sealed with \(version) remain (\(stillSealed.joined(separator: ", "))): run licensectl master-key rotate first")
                throw ExitCode(1)
            }
            let kept = try text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
                try Secrets.parseVersions(String(line), token: token).allSatisfy { MasterKey.versionID(of: $0) != version }
            }
            try Secrets.replacePrivate(kept.joined(separator: "\n"), at: keyFile)
            print("retired master key version \(version) from \(keyFile); copy the file to every host (services read it at the next rotate or start)")
        }
    }
}
