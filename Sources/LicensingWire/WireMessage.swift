import CLicensingProto
import NIOCore

/// A message of the `licensing.v1` contracts, encoded and decoded by libprotobuf-c.
public protocol WireMessage: Sendable, Equatable {
    /// The message's full name in the contracts, e.g. `licensing.v1.Envelope`.
    static var protoName: String { get }
    init()
    /// Decodes protobuf bytes; throws ``WireError/undecodable(_:)`` for anything
    /// protobuf-c refuses (truncated, wrong wire types, bad lengths).
    init(serializedBytes bytes: [UInt8]) throws(WireError)
    /// Decodes the readable bytes of a buffer without copying them first.
    init(buffer: ByteBuffer) throws(WireError)
    /// Decodes a request: as `init(serializedBytes:)`, and every integer field (nested ones
    /// included) must pass `integers`.
    init(serializedBytes bytes: [UInt8], integers: @escaping WireIntegerCheck) throws(WireError)
    func serializedBytes() -> [UInt8]
    /// Appends the encoding to `buffer`.
    func serialize(into buffer: inout ByteBuffer)
    /// The number of bytes `serialize` will write.
    var serializedSize: Int { get }
}

public enum WireError: Error, Equatable, CustomStringConvertible {
    /// The bytes are not a valid encoding of the named message.
    case undecodable(String)
    /// A field's value breaks the contract's rules: the field's path and what is wrong.
    case invalidField(String, String)

    public var description: String {
        switch self {
        case .undecodable(let name): return "bytes do not decode as \(name)"
        case .invalidField(let field, let problem): return "\(field) \(problem)"
        }
    }
}

/// A method of a service: its wire name and message types. Generated from `service` blocks.
public struct WireMethod<Request: WireMessage, Response: WireMessage>: Sendable {
    /// `licensing.v1.Validation/Validate`.
    public let name: String
    public let serverStreaming: Bool

    public init(_ name: String, serverStreaming: Bool) {
        self.name = name
        self.serverStreaming = serverStreaming
    }

    public var info: WireMethodInfo { WireMethodInfo(name: name, serverStreaming: serverStreaming) }
}

/// A method's name and shape, without its message types.
public struct WireMethodInfo: Hashable, Sendable {
    public let name: String
    public let serverStreaming: Bool
}

/// The link between a generated Swift message and its protobuf-c struct.
/// Generated for every message; callers use ``WireMessage`` only.
public protocol ProtobufCMessageBinding: WireMessage {
    associatedtype CMessage
    static func cNew() -> CMessage
    static func cUnpack(_ length: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CMessage>?
    static func cFree(_ message: UnsafeMutablePointer<CMessage>)
    static func cPackedSize(_ message: UnsafePointer<CMessage>) -> Int
    static func cPack(_ message: UnsafePointer<CMessage>, _ out: UnsafeMutablePointer<UInt8>) -> Int
    init(c: CMessage)
    func fill(_ c: inout CMessage, _ arena: WireArena)
}

extension ProtobufCMessageBinding {
    public init(serializedBytes bytes: [UInt8]) throws(WireError) {
        let decoded = bytes.withUnsafeBytes { raw in
            Result { () throws(WireError) in try Self.decode(raw, integers: nil) }
        }
        self = try decoded.get()
    }

    public init(serializedBytes bytes: [UInt8], integers: @escaping WireIntegerCheck) throws(WireError) {
        let decoded = bytes.withUnsafeBytes { raw in
            Result { () throws(WireError) in try Self.decode(raw, integers: integers) }
        }
        self = try decoded.get()
    }

    public init(buffer: ByteBuffer) throws(WireError) {
        let decoded = buffer.withUnsafeReadableBytes { raw in
            Result { () throws(WireError) in try Self.decode(raw, integers: nil) }
        }
        self = try decoded.get()
    }

    private static func decode(_ raw: UnsafeRawBufferPointer, integers: WireIntegerCheck?) throws(WireError) -> Self {
        // protobuf-c wants a valid pointer even for an empty message.
        var empty: UInt8 = 0
        return try withUnsafePointer(to: &empty) { emptyPointer throws(WireError) in
            let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPointer
            guard let unpacked = cUnpack(raw.count, base) else { throw .undecodable(protoName) }
            defer { cFree(unpacked) }
            // Every protobuf-c message starts with its base, which names its descriptor.
            let descriptor = UnsafeRawPointer(unpacked).assumingMemoryBound(to: ProtobufCMessage.self).pointee.descriptor!
            try WireFields.check(UnsafeRawBufferPointer(start: base, count: raw.count), descriptor, integers: integers)
            return Self(c: unpacked.pointee)
        }
    }

    private func withCMessage<T>(_ body: (UnsafePointer<CMessage>) -> T) -> T {
        let arena = WireArena()
        var c = Self.cNew()
        fill(&c, arena)
        return withExtendedLifetime(arena) { withUnsafePointer(to: &c) { body($0) } }
    }

    public var serializedSize: Int {
        withCMessage { Self.cPackedSize($0) }
    }

    public func serializedBytes() -> [UInt8] {
        withCMessage { c in
            let size = Self.cPackedSize(c)
            return [UInt8](unsafeUninitializedCapacity: size) { out, written in
                written = size == 0 ? 0 : Self.cPack(c, out.baseAddress!)
            }
        }
    }

    public func serialize(into buffer: inout ByteBuffer) {
        withCMessage { c in
            let size = Self.cPackedSize(c)
            guard size > 0 else { return }
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
                Self.cPack(c, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
    }
}
