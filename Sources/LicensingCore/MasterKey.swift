import Crypto
import Foundation
import Synchronization

/// Seals secrets at rest (signing keys, customers' data keys, stored answers) with
/// AES-256-GCM under the master key, which comes from a file or the environment and never
/// enters a database.
///
/// The master key is a ring of versions: the newest seals, every version opens. A sealed
/// value names the version that sealed it, so after a rotation (a new version added, the
/// values re-wrapped, ``reload()``) an old version can be retired once nothing needs it.
public struct MasterKey: Sendable {
    private let ring: Ring

    /// One version, for tests and single-key deployments.
    public init(bytes: [UInt8]) throws(MasterKeyError) {
        try self.init(versions: [bytes])
    }

    /// Versions oldest first; the last one seals.
    public init(versions: [[UInt8]], loader: (@Sendable () throws -> [[UInt8]])? = nil) throws(MasterKeyError) {
        self.ring = Ring(try Self.keys(versions), loader: loader)
    }

    /// The id of a version: a hash of it, safe to print and to record beside what it sealed.
    public static func versionID(of bytes: [UInt8]) -> String {
        Hex.encode(SHA256.hash(data: Array("license-manager key id".utf8) + bytes).prefix(8))
    }

    /// The version that seals new values.
    public var currentVersion: String { ring.keys.withLock { $0.last!.id } }

    /// Every version this process knows, oldest first.
    public var versions: [String] { ring.keys.withLock { $0.map(\.id) } }

    /// Reads the versions again from where they came from (after an operator added one, or
    /// retired one that `licensectl master-key retire` found nothing still needs).
    @discardableResult
    public func reload() throws -> [String] {
        guard let loader = ring.loader else { return versions }
        let fresh = try Self.keys(try loader())
        ring.keys.withLock { $0 = fresh }
        return fresh.map(\.id)
    }

    /// magic ‖ version id (8 bytes) ‖ nonce ‖ ciphertext ‖ tag. `context` is bound as
    /// associated data, so a sealed value moved to another row does not open.
    public func seal(_ plaintext: [UInt8], context: String) -> [UInt8] {
        let key = ring.keys.withLock { $0.last! }
        let box = try! AES.GCM.seal(plaintext, using: key.key, authenticating: Array(context.utf8))
        return Self.magic + key.idBytes + Array(box.combined!)
    }

    public func open(_ sealed: [UInt8], context: String) throws(MasterKeyError) -> [UInt8] {
        let keys = ring.keys.withLock { $0 }
        if let id = Self.versionBytes(of: sealed) {
            guard let key = keys.first(where: { $0.idBytes[...] == id }) else { throw .unknownVersion(Hex.encode(id)) }
            return try Self.open(sealed.dropFirst(Self.headerLength), key: key.key, context: context)
        }
        // Values sealed before versions were recorded: any version may have sealed them.
        for key in keys.reversed() {
            if let plain = try? Self.open(sealed[...], key: key.key, context: context) { return plain }
        }
        throw .cannotOpen
    }

    /// The version that sealed a value ("" for a value from before versions were recorded).
    public static func version(of sealed: [UInt8]) -> String {
        versionBytes(of: sealed).map { Hex.encode($0) } ?? ""
    }

    /// Opens with any version and seals with the newest; nil when it is sealed with the newest already.
    public func rewrap(_ sealed: [UInt8], context: String) throws(MasterKeyError) -> [UInt8]? {
        if Self.version(of: sealed) == currentVersion { return nil }
        return seal(try open(sealed, context: context), context: context)
    }

    /// An SQLite expression giving the version that sealed the value in `column`, as
    /// `version(of:)` does: for counting what each version still seals without reading it out.
    public static func versionExpression(_ column: String) -> String {
        "CASE WHEN length(\(column)) > \(headerLength + 28) AND substr(\(column), 1, 3) = X'4D4B01' THEN lower(hex(substr(\(column), 4, 8))) ELSE '' END"
    }

    private static let magic: [UInt8] = [0x4D, 0x4B, 0x01]
    private static let headerLength = 3 + 8

    private static func versionBytes(of sealed: [UInt8]) -> ArraySlice<UInt8>? {
        guard sealed.count > headerLength + 28, Array(sealed.prefix(3)) == magic else { return nil }
        return sealed[3..<headerLength]
    }

    private static func open(_ combined: ArraySlice<UInt8>, key: SymmetricKey, context: String) throws(MasterKeyError) -> [UInt8] {
        do {
            let box = try AES.GCM.SealedBox(combined: combined)
            return Array(try AES.GCM.open(box, using: key, authenticating: Array(context.utf8)))
        } catch {
            throw .cannotOpen
        }
    }

    private static func keys(_ versions: [[UInt8]]) throws(MasterKeyError) -> [Version] {
        guard !versions.isEmpty else { throw .wrongLength(0) }
        var result: [Version] = []
        for bytes in versions {
            guard bytes.count == 32 else { throw .wrongLength(bytes.count) }
            let id = versionID(of: bytes)
            if !result.contains(where: { $0.id == id }) { result.append(Version(bytes)) }
        }
        return result
    }

    struct Version: @unchecked Sendable {
        // @unchecked: SymmetricKey is an immutable value swift-crypto 3 does not mark Sendable.
        let key: SymmetricKey
        let id: String
        let idBytes: [UInt8]
        init(_ bytes: [UInt8]) {
            key = SymmetricKey(data: bytes)
            id = MasterKey.versionID(of: bytes)
            idBytes = Hex.decode(id)!
        }
    }

    private final class Ring: Sendable {
        let keys: Mutex<[Version]>
        let loader: (@Sendable () throws -> [[UInt8]])?
        init(_ keys: [Version], loader: (@Sendable () throws -> [[UInt8]])?) {
            self.keys = Mutex(keys)
            self.loader = loader
        }
    }
}

public enum MasterKeyError: Error, Equatable, CustomStringConvertible {
    case wrongLength(Int)
    case cannotOpen
    case unknownVersion(String)

    public var description: String {
        switch self {
        case .wrongLength(0): return "no master key given"
        case .wrongLength(let n): return "the master key must be 32 bytes (64 hex digits), got \(n) bytes"
        case .cannotOpen: return "a sealed secret does not open with this master key (wrong key, or the data was altered)"
        case .unknownVersion(let id):
            return "a sealed secret was sealed with master key version \(id), which this service does not have: add it back to the master key file"
        }
    }
}
