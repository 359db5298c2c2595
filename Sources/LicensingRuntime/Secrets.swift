import ArgumentParser
import Foundation
import LicensingCore

/// Secrets a service reads from a file or the environment. In local development mode a
/// missing secret is generated into the data folder with mode 0600; otherwise a missing
/// secret stops the service before it serves anything.
public enum Secrets {
    public struct Missing: Error, CustomStringConvertible {
        public let name: String
        public let file: String
        public var description: String {
            "secret \(name) not found: set LM_\(name.uppercased().replacingOccurrences(of: "-", with: "_")) (hex), "
                + "or put it in \(file), or run with --dev to generate one for local development"
        }
    }

    /// The key-hash secret shared by issuance and validation.
    public static func keyHashSecret(settings: Settings, developmentMode: Bool) throws -> KeyHashSecret {
        let bytes = try load(name: "key-hash-secret", settings: settings, developmentMode: developmentMode)
        return try KeyHashSecret(bytes: bytes)
    }

    /// The master key ring: one 64-hex-digit version per line (or separated by commas in
    /// `LM_MASTER_KEY`), oldest first; the last one seals. Read again on `MasterKey.reload()`.
    public static func masterKey(settings: Settings, developmentMode: Bool) throws -> MasterKey {
        try masterKey(settings: settings, developmentMode: developmentMode, token: try pkcs11Token(settings))
    }

    /// `token` unwraps `pkcs11:` versions: the process's one token (``pkcs11Token(_:)``).
    public static func masterKey(settings: Settings, developmentMode: Bool, token: PKCS11Token?) throws -> MasterKey {
        if settings["master-key"] == nil, !FileManager.default.fileExists(atPath: masterKeyFile(settings)) {
            // Generates one in development mode, or says what is missing.
            _ = try load(name: "master-key", settings: settings, developmentMode: developmentMode)
        }
        let loader: @Sendable () throws -> [[UInt8]] = {
            try masterKeyVersions(settings: settings, token: token)
        }
        return try MasterKey(versions: try loader(), loader: loader)
    }

    static func masterKeyVersions(settings: Settings, token: PKCS11Token?) throws -> [[UInt8]] {
        let text: String
        if let value = settings["master-key"] {
            text = value
        } else {
            text = try String(contentsOfFile: masterKeyFile(settings), encoding: .utf8)
        }
        return try parseVersions(text, token: token)
    }

    public static func masterKeyFile(_ settings: Settings) -> String {
        settings["master-key-file"] ?? "\(settings.dataDirectory)/secrets/master-key"
    }

    /// Hex lines (or comma-separated), blank lines and `#` comments ignored. A line
    /// `pkcs11:LABEL:HEX` is a version kept wrapped by the AES key LABEL of the PKCS#11
    /// token: the file alone does not open it, the token unwraps it into this process.
    public static func parseVersions(_ text: String, token: PKCS11Token? = nil) throws -> [[UInt8]] {
        try text.split(whereSeparator: { $0 == "\n" || $0 == "," }).compactMap { line -> [UInt8]? in
            let entry = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let field = entry.trimmingCharacters(in: .whitespacesAndNewlines)
            if field.isEmpty { return nil }
            if field.hasPrefix("pkcs11:") { return try unwrapVersion(field, token: token) }
            guard let bytes = Hex.decode(field), bytes.count == 32 else {
                throw Missing(name: "master-key", file: "(a version is not 64 hex digits)")
            }
            return bytes
        }
    }

    /// Associated data of a master-key version wrapped by a token key.
    static let wrappedVersionContext = Array("license-manager master key".utf8)

    static func unwrapVersion(_ field: String, token: PKCS11Token?) throws -> [UInt8] {
        let parts = field.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty, let sealed = Hex.decode(String(parts[2])) else {
            throw ValidationError("a master key line must be 64 hex digits or pkcs11:LABEL:HEX, not \"\(field.prefix(20))…\"")
        }
        guard let token else {
            throw ValidationError(
                "the master key version wrapped by token key \(parts[1]) needs the PKCS#11 token: set pkcs11-module, pkcs11-token and pkcs11-pin-file")
        }
        do {
            let bytes = try token.open(label: String(parts[1]), sealed, aad: wrappedVersionContext)
            guard bytes.count == 32 else { throw ValidationError("token key \(parts[1]) unwrapped \(bytes.count) bytes, not a 32-byte master key version") }
            return bytes
        } catch let error as PKCS11Error {
            throw ValidationError("the master key version wrapped by token key \(parts[1]) did not unwrap: \(error)")
        }
    }

    /// A new master-key version, made here and wrapped by the token's AES key `label`
    /// (generated in the token first if it has none): the line for the key file.
    public static func wrappedVersionLine(label: String, token: PKCS11Token) throws -> (line: String, version: [UInt8]) {
        do {
            try token.generateSecretKey(label: label)
        } catch {
            // A key the token has already wraps this version too.
            guard error.labelExists else { throw error }
        }
        let version = KeyHashSecret.generateBytes()
        let sealed = try token.seal(label: label, version, aad: wrappedVersionContext)
        return ("pkcs11:\(label):\(Hex.encode(sealed))", version)
    }

    /// The PKCS#11 token the settings name (`pkcs11-module`, `pkcs11-token`, and
    /// `pkcs11-pin` or `pkcs11-pin-file`), or nil when they name none.
    public static func pkcs11Token(_ settings: Settings) throws -> PKCS11Token? {
        guard let module = settings["pkcs11-module"], !module.isEmpty else { return nil }
        guard let label = settings["pkcs11-token"], !label.isEmpty else {
            throw ValidationError("pkcs11-module is set: pkcs11-token must name the token (its label) that holds the keys")
        }
        let pin: String
        if let value = settings["pkcs11-pin"] {
            pin = value
        } else if let file = settings["pkcs11-pin-file"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("cannot read pkcs11-pin-file \(file)") }
            pin = text.trimmingCharacters(in: .whitespacesAndNewlines)
        } else {
            throw ValidationError("pkcs11-module is set: give the token's user PIN in pkcs11-pin-file (or LM_PKCS11_PIN)")
        }
        return PKCS11Token(.init(module: module, tokenLabel: label, pin: pin))
    }

    public static func load(name: String, settings: Settings, developmentMode: Bool) throws -> [UInt8] {
        if let hex = settings[name] {
            guard let bytes = Hex.decode(hex.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw Missing(name: name, file: "(setting is not hex)")
            }
            return bytes
        }
        let file = settings["\(name)-file"] ?? "\(settings.dataDirectory)/secrets/\(name)"
        if let text = try? String(contentsOfFile: file, encoding: .utf8),
            let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines))
        {
            return bytes
        }
        guard developmentMode else { throw Missing(name: name, file: file) }
        try writePrivate(Hex.encode(KeyHashSecret.generateBytes()) + "\n", to: file)
        // Read back: when two services of a local stack start together, the first writer wins.
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
            let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw Missing(name: name, file: file) }
        return bytes
    }

    /// Writes a file readable by its owner only, complete or not at all: the text goes to a
    /// private temporary file that is then linked into place, so a service starting at the
    /// same moment never reads a half-written secret. If the file exists already, it is kept.
    public static func writePrivate(_ text: String, to path: String) throws {
        try writePrivate(Array(text.utf8), to: path, replacing: false)
    }

    /// Replaces a secret file (mode 0600) in one step: readers see the old text or the new.
    public static func replacePrivate(_ text: String, at path: String) throws {
        try writePrivate(Array(text.utf8), to: path, replacing: true)
    }

    /// Replaces a file (mode 0600) with these bytes in one step, synced to disk with its
    /// name before this returns (a restored database, a backup's manifest).
    public static func replacePrivate(_ data: Data, at path: String) throws {
        try writePrivate(Array(data), to: path, replacing: true)
    }

    private static func writePrivate(_ bytes: [UInt8], to path: String, replacing: Bool) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let temporary = "\(path).\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { unlink(temporary) }
        // A replaced file keeps its owner and mode (a key file the services' group reads
        // stays readable to them); never more than owner read-write plus group read.
        var existing = stat()
        if replacing, stat(path, &existing) == 0 {
            _ = fchown(descriptor, existing.st_uid, existing.st_gid)
            _ = fchmod(descriptor, existing.st_mode & 0o640)
        }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, bytes.count - written) }
            guard count > 0 else { break }
            written += count
        }
        let synced = written == bytes.count && fsync(descriptor) == 0
        let failure = errno
        close(descriptor)
        guard synced else { throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO) }
        if replacing {
            guard rename(temporary, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } else if link(temporary, path) != 0, errno != EEXIST {
            // link(2) fails if the name exists: the first writer wins, atomically.
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        // The new name is durable only once its directory is synced: without this, a crash
        // (or a file system gone read-only) soon after can lose a secret already in use.
        try syncDirectory(directory)
    }

    /// fsync(2) of a directory, which makes the names created or renamed in it durable.
    private static func syncDirectory(_ directory: String) throws {
        let descriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }
}
