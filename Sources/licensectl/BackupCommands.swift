import ArgumentParser
import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

/// Backups: every service's database copied online through the gateway (operators), each
/// encrypted and authenticated here with a key derived from the master key, with a manifest
/// that is authenticated too. A file is a sequence of sealed chunks (AES-256-GCM; the
/// chunk's number and whether it is the last are bound in), so a cut or reordered file does
/// not restore.
enum BackupFormat {
    static let services = ["issuance", "validation", "usage", "reporting", "integrations", "gateway"]
    static let magic = Array("LMBACKUP1\n".utf8)
    /// Issuance's list of erased customers, copied beside its data and merged on restore.
    static let erasures = "issuance-erasures"

    /// The master key's versions, oldest first: backups are sealed with the newest, and a
    /// restore finds the version its manifest names.
    static func masterKeys(_ option: String?) throws -> [[UInt8]] {
        let text: String
        if let value = ProcessInfo.processInfo.environment["LM_MASTER_KEY"], option == nil {
            text = value
        } else {
            guard let file = option ?? LocalStack.file("secrets/master-key") else {
                throw ValidationError("give --master-key FILE (or LM_MASTER_KEY): backups are encrypted with a key derived from it")
            }
            guard let read = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("cannot read the master key file \(file)") }
            text = read
        }
        let versions = try Secrets.parseVersions(text, token: try token())
        guard !versions.isEmpty else { throw ValidationError("the master key must be 64 hex digits per version, one per line") }
        return versions
    }

    /// The PKCS#11 token that wraps master-key versions, from LM_PKCS11_MODULE,
    /// LM_PKCS11_TOKEN and LM_PKCS11_PIN_FILE (or LM_PKCS11_PIN), as the services read them.
    static func token() throws -> PKCS11Token? {
        try Secrets.pkcs11Token(Settings.load(flags: [:], configFile: nil))
    }

    static func masterKey(_ option: String?) throws -> [UInt8] {
        try masterKeys(option).last!
    }

    /// Names a master key version without revealing it: which version a backup needs.
    static func keyID(_ master: [UInt8]) -> String {
        MasterKey.versionID(of: master)
    }

    static func key(_ master: [UInt8], salt: [UInt8], purpose: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: master), salt: salt, info: Array("license-manager backup \(purpose)".utf8), outputByteCount: 32)
    }

    static func chunkAAD(_ service: String, _ index: UInt64, last: Bool) -> [UInt8] {
        Array("\(service)\u{0}\(index)\u{0}\(last ? 1 : 0)".utf8)
    }
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Copy every service's database online, encrypted, into a folder (operators).",
        discussion: """
            Each service copies its database while it keeps serving (SQLite's VACUUM INTO); the
            copies arrive through the gateway and are encrypted here (AES-256-GCM, a key derived
            from the master key and a random salt) next to an authenticated manifest (service,
            schema, SHA-256, size, time, which master key). Restore with licensectl restore.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "The folder to write (created; must be empty). With --every: the folder each backup gets a dated folder in.") var to: String
    @Option(help: "The master key file (default: LM_MASTER_KEY, or the local stack's).") var masterKey: String?
    @Option(help: "Only these services, comma-separated.") var services: String?
    @Option(help: "Keep running and take a backup this often (e.g. 24h, 30m); stop with Ctrl-C or SIGTERM.") var every: String?
    @Option(help: "With --every: how many backups to keep (the oldest are removed).") var keep: Int = 7

    func run() async throws {
        let master = try BackupFormat.masterKey(masterKey)
        let wanted = services.map { $0.split(separator: ",").map(String.init) } ?? BackupFormat.services
        for name in wanted where !BackupFormat.services.contains(name) { throw ValidationError("no service \(name); services: \(BackupFormat.services.joined(separator: ", "))") }
        guard let every else { return try await backup(into: to, wanted: wanted, master: master) }
        let interval = try parseDuration(every)
        guard interval >= 1, (1...10_000).contains(keep) else { throw ValidationError("--every must be at least 1s and --keep 1 to 10000") }
        try FileManager.default.createDirectory(atPath: to, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        while !Task.isCancelled {
            let started = Date()
            let folder = "\(to)/\(ISODate.format(Int64(started.timeIntervalSince1970)).replacingOccurrences(of: ":", with: "-"))"
            do {
                try await backup(into: folder, wanted: wanted, master: master)
                try prune(root: to)
            } catch {
                // A failed run is said and the schedule goes on; the next one may work.
                Output.error("backup into \(folder) failed: \(error)")
            }
            let wait = max(0, Double(interval) - Date().timeIntervalSince(started))
            try await Task.sleep(for: .seconds(wait))
        }
    }

    /// Unbuffered: under --every, each line reaches a log file as it happens.
    func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Removes the oldest complete backups beyond `keep`.
    func prune(root: String) throws {
        let backups = try FileManager.default.contentsOfDirectory(atPath: root)
            .filter { FileManager.default.fileExists(atPath: "\(root)/\($0)/manifest.json") }.sorted()
        for old in backups.dropLast(keep) {
            try FileManager.default.removeItem(atPath: "\(root)/\(old)")
            say("removed the old backup \(root)/\(old)")
        }
    }

    func backup(into to: String, wanted: [String], master: [UInt8]) async throws {
        try FileManager.default.createDirectory(atPath: to, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard (try FileManager.default.contentsOfDirectory(atPath: to)).isEmpty else { throw ValidationError("\(to) is not empty: give a new folder") }
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let client = try global.client()
        defer { Task { await client.close() } }
        var entries: [[String: Any]] = []
        // Issuance's list of erased customers is copied right after its data, so it is never
        // older than the data it will be replayed on.
        for service in wanted.flatMap({ $0 == "issuance" ? [$0, BackupFormat.erasures] : [$0] }) {
            let key = BackupFormat.key(master, salt: salt, purpose: service)
            let file = "\(service).db.enc"
            FileManager.default.createFile(atPath: "\(to)/\(file)", contents: Data(BackupFormat.magic), attributes: [.posixPermissions: 0o600])
            guard let out = FileHandle(forWritingAtPath: "\(to)/\(file)") else { throw ValidationError("cannot write \(to)/\(file)") }
            out.seekToEndOfFile()
            var entry: [String: Any] = ["service": service, "file": file]
            var index: UInt64 = 0
            var plainHash = SHA256()
            do {
                var metadata = RPCMetadata()
                metadata[RPCMetadata.apiKey] = global.credential
                let stream = try await client.streamRaw(
                    GatewayMethods.backup.name, payload: SnapshotRequest(service: service).serializedBytes(), metadata: metadata,
                    deadline: .now + .seconds(Int64(max(global.timeout, 600))))
                for try await bytes in stream {
                    let chunk = try SnapshotChunk(serializedBytes: bytes)
                    if index == 0 {
                        entry["migrations"] = chunk.migrations
                        entry["bytes"] = Int(chunk.bytes)
                        entry["taken_at"] = ISODate.format(chunk.takenAt)
                    }
                    plainHash.update(data: chunk.data)
                    let sealed = try AES.GCM.seal(chunk.data, using: key, authenticating: BackupFormat.chunkAAD(service, index, last: chunk.last)).combined!
                    var length = UInt32(sealed.count).bigEndian
                    out.write(Data(bytes: &length, count: 4))
                    out.write(sealed)
                    index += 1
                    if chunk.last {
                        let sum = plainHash.finalize().map { String(format: "%02x", $0) }.joined()
                        guard sum == chunk.sha256 else { throw ValidationError("\(service): the copy arrived damaged (checksum differs)") }
                        entry["sha256"] = sum
                    }
                }
            } catch let error as RPCError {
                try? out.close()
                Output.error("\(service): \(error.code): \(FlagNames.speak(error.message))")
                throw ExitCode(2)
            }
            try out.synchronize()
            try out.close()
            guard entry["sha256"] != nil else { throw ValidationError("\(service): the copy ended early") }
            entries.append(entry)
            say("\(service)  \(entry["bytes"] ?? 0) bytes  \((entry["migrations"] as? [String])?.last ?? "")")
        }
        let manifest: [String: Any] = [
            "version": 1, "created_at": ISODate.format(Int64(Date().timeIntervalSince1970)), "master_key_id": BackupFormat.keyID(master),
            "salt": Data(salt).base64EncodedString(), "services": entries,
        ]
        let body = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys, .prettyPrinted])
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: BackupFormat.key(master, salt: salt, purpose: "manifest"))
        // Synced, with the folder's entries: "backup in …" is said only of a backup on disk.
        try Secrets.replacePrivate(String(decoding: body, as: UTF8.self), at: "\(to)/manifest.json")
        try Secrets.replacePrivate(Hex.encode(Array(mac)), at: "\(to)/manifest.mac")
        say("backup in \(to), master key \(BackupFormat.keyID(master))")
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore services' databases from a backup (the services must be stopped).",
        discussion: """
            Verifies the manifest and every chunk (a wrong master key, an altered, cut or
            reordered file is refused before anything is written), then replaces the stopped
            service's database. A restored issuance gets a new change-feed epoch, so the
            services that follow its feed see that it went back and follow it again.
            """)
    @Option(help: "The backup folder.") var from: String
    @Option(help: "The data folder of the services to restore.") var dataDir: String
    @Option(help: "The master key file (default: LM_MASTER_KEY, or the local stack's).") var masterKey: String?
    @Option(help: "Only these services, comma-separated (default: all in the backup).") var services: String?

    func run() async throws {
        let versions = try BackupFormat.masterKeys(masterKey)
        guard let body = FileManager.default.contents(atPath: "\(from)/manifest.json"),
            let macText = try? String(contentsOfFile: "\(from)/manifest.mac", encoding: .utf8),
            let manifest = try JSONSerialization.jsonObject(with: body) as? [String: Any],
            let saltText = manifest["salt"] as? String, let salt = Data(base64Encoded: saltText), let entries = manifest["services"] as? [[String: Any]]
        else { throw ValidationError("\(from) holds no backup manifest") }
        // The version that sealed the backup (older backups: the only one there was).
        let sealedWith = manifest["master_key_id"] as? String ?? BackupFormat.keyID(versions.last!)
        guard let master = versions.first(where: { BackupFormat.keyID($0) == sealedWith }) else {
            throw ValidationError(
                "this backup was made with master key version \(sealedWith); the key file holds \(versions.map(BackupFormat.keyID).joined(separator: ", "))")
        }
        guard let mac = Hex.decode(macText.trimmingCharacters(in: .whitespacesAndNewlines)),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: BackupFormat.key(master, salt: Array(salt), purpose: "manifest"))
        else { throw ValidationError("the manifest was altered (its authentication code does not match)") }
        let wanted = services.map { Set($0.split(separator: ",").map(String.init)) }
        let chosen = entries.filter { ($0["service"] as? String) != BackupFormat.erasures && (wanted == nil || wanted!.contains(($0["service"] as? String) ?? "")) }
        guard !chosen.isEmpty else { throw ValidationError("the backup holds none of the services asked for") }
        for entry in chosen {
            let service = entry["service"] as? String ?? ""
            guard BackupFormat.services.contains(service), let file = entry["file"] as? String, !file.contains("/"), let sum = entry["sha256"] as? String else {
                throw ValidationError("the manifest names a service it should not")
            }
            // The service must be stopped: its data folder lock is taken for the restore.
            let lock: DataFolderLock
            do {
                lock = try DataFolderLock(service: service, folder: dataDir)
            } catch let held as DataFolderLock.Held {
                throw ValidationError("\(held.description.replacingOccurrences(of: "; stop it first, or give this copy another --data-dir", with: "")): stop it before restoring its database")
            }
            let plain = try decrypt("\(from)/\(file)", service: service, key: BackupFormat.key(master, salt: Array(salt), purpose: service))
            let digest = SHA256.hash(data: plain).map { String(format: "%02x", $0) }.joined()
            guard digest == sum else { throw ValidationError("\(service): the decrypted copy does not match its checksum") }
            let target = "\(dataDir)/\(service).sqlite"
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: target + suffix) }
            // In one step and synced: a crash or a full disk leaves the old file or the new, never half.
            try Secrets.replacePrivate(plain, at: target)
            if service == "issuance" {
                let erased = try mergeErasures(entries: entries, master: master, salt: Array(salt))
                // A new epoch: followers see the feed went back and follow it again. Customers
                // erased since (or in) the backup lose their data keys before anything reads it.
                var zeroing = Configuration()
                zeroing.prepareDatabase { db in try db.execute(sql: "PRAGMA secure_delete = ON") }
                let queue = try DatabaseQueue(path: target, configuration: zeroing)
                try await queue.write { db in
                    if try db.tableExists("feed_epoch") {
                        try db.execute(sql: "UPDATE feed_epoch SET epoch = lower(hex(randomblob(16))), since_seq = (SELECT COALESCE(MAX(seq), 0) FROM change_event)")
                    }
                    if try db.tableExists("data_key") {
                        for customer in erased { try db.execute(sql: "DELETE FROM data_key WHERE owner = ?", arguments: [customer]) }
                    }
                }
                try queue.close()
                if !erased.isEmpty { print("\(erased.count) erased customer(s) stay erased: their data keys are not restored") }
            }
            _ = lock
            print("\(service) restored from \(entry["taken_at"] ?? "the backup") (\(plain.count) bytes)")
        }
    }

    /// Adds the backup's erased customers to the data folder's list (which a restore never
    /// shortens or replaces) and returns the whole list's customers.
    func mergeErasures(entries: [[String: Any]], master: [UInt8], salt: [UInt8]) throws -> [String] {
        let ledger = try ErasureLedger(path: ErasureLedger.path(besides: "\(dataDir)/issuance.sqlite"))
        defer { try? ledger.queue.close() }
        if let entry = entries.first(where: { $0["service"] as? String == BackupFormat.erasures }),
            let file = entry["file"] as? String, !file.contains("/"), let sum = entry["sha256"] as? String
        {
            let plain = try decrypt("\(from)/\(file)", service: BackupFormat.erasures, key: BackupFormat.key(master, salt: salt, purpose: BackupFormat.erasures))
            guard SHA256.hash(data: plain).map({ String(format: "%02x", $0) }).joined() == sum else {
                throw ValidationError("\(BackupFormat.erasures): the decrypted copy does not match its checksum")
            }
            let copy = "\(dataDir)/\(BackupFormat.erasures).restoring"
            try Secrets.replacePrivate(plain, at: copy)
            defer { try? FileManager.default.removeItem(atPath: copy) }
            let backup = try ErasureLedger(path: copy)
            try ledger.merge(try backup.entries())
            try backup.queue.close()
        }
        return try ledger.entries().map(\.customer)
    }

    func decrypt(_ path: String, service: String, key: SymmetricKey) throws -> Data {
        guard let data = FileManager.default.contents(atPath: path), data.starts(with: BackupFormat.magic) else {
            throw ValidationError("\(path) is not a backup file")
        }
        var plain = Data()
        var offset = BackupFormat.magic.count
        var index: UInt64 = 0
        var sawLast = false
        while offset < data.count {
            guard !sawLast, offset + 4 <= data.count else { throw ValidationError("\(service): the backup file was altered (data after its end)") }
            let length = Int(data[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            offset += 4
            guard length > 28, offset + length <= data.count else { throw ValidationError("\(service): the backup file was cut or altered") }
            let sealed = data[offset..<offset + length]
            offset += length
            let box = try AES.GCM.SealedBox(combined: sealed)
            if let opened = try? AES.GCM.open(box, using: key, authenticating: BackupFormat.chunkAAD(service, index, last: false)) {
                plain.append(opened)
            } else if let opened = try? AES.GCM.open(box, using: key, authenticating: BackupFormat.chunkAAD(service, index, last: true)) {
                plain.append(opened)
                sawLast = true
            } else {
                throw ValidationError("\(service): the backup file was altered, or the master key is another")
            }
            index += 1
        }
        guard sawLast else { throw ValidationError("\(service): the backup file was cut (its last part is missing)") }
        return plain
    }
}
