import CLicensingProto

/// The shape of the contracts as protobuf-c's generated descriptors give it: every service,
/// method and field. Tests walk it to send each field of each request its extreme values,
/// so a field added to a contract is covered without anyone listing it.
public struct WireServiceShape: Sendable {
    /// `licensing.v1.Issuance`.
    public let name: String
    public let methods: [WireMethodShape]
}

public struct WireMethodShape: Sendable {
    /// `licensing.v1.Issuance/IssueLicense`.
    public let fullName: String
    public let request: WireMessageShape
}

public final class WireMessageShape: Sendable {
    /// `licensing.v1.IssueLicenseRequest`.
    public let name: String
    /// Filled once, while the shape is built; message fields refer to shared shapes.
    nonisolated(unsafe) public private(set) var fields: [WireFieldShape] = []

    init(name: String) { self.name = name }

    fileprivate func set(_ fields: [WireFieldShape]) { self.fields = fields }
}

public struct WireFieldShape: Sendable {
    public enum Kind: Sendable {
        /// A varint of this many bits, signed or not, zigzag-encoded or not.
        case varint(bits: Int, signed: Bool, zigzag: Bool)
        case fixed(bits: Int, signed: Bool)
        case enumeration, bool, floatingPoint, string, bytes
        case message(WireMessageShape)
    }

    public let name: String
    public let number: UInt32
    public let repeated: Bool
    public let kind: Kind
}

extension WireServiceShape {
    /// Reads a protoc-c service descriptor.
    public init(_ descriptor: ProtobufCServiceDescriptor) {
        var messages: [String: WireMessageShape] = [:]
        let name = String(cString: descriptor.name)
        self.name = name
        self.methods = (0..<Int(descriptor.n_methods)).map { index in
            let method = descriptor.methods[index]
            return WireMethodShape(
                fullName: "\(name)/\(String(cString: method.name))",
                request: Self.message(method.input, &messages))
        }
    }

    private static func message(_ descriptor: UnsafePointer<ProtobufCMessageDescriptor>, _ known: inout [String: WireMessageShape]) -> WireMessageShape {
        let name = String(cString: descriptor.pointee.name)
        if let shape = known[name] { return shape }
        let shape = WireMessageShape(name: name)
        known[name] = shape
        let fields = (0..<Int(descriptor.pointee.n_fields)).map { index -> WireFieldShape in
            let field = descriptor.pointee.fields[index]
            let kind: WireFieldShape.Kind
            switch field.type {
            case PROTOBUF_C_TYPE_INT32: kind = .varint(bits: 32, signed: true, zigzag: false)
            case PROTOBUF_C_TYPE_INT64: kind = .varint(bits: 64, signed: true, zigzag: false)
            case PROTOBUF_C_TYPE_SINT32: kind = .varint(bits: 32, signed: true, zigzag: true)
            case PROTOBUF_C_TYPE_SINT64: kind = .varint(bits: 64, signed: true, zigzag: true)
            case PROTOBUF_C_TYPE_UINT32: kind = .varint(bits: 32, signed: false, zigzag: false)
            case PROTOBUF_C_TYPE_UINT64: kind = .varint(bits: 64, signed: false, zigzag: false)
            case PROTOBUF_C_TYPE_SFIXED32: kind = .fixed(bits: 32, signed: true)
            case PROTOBUF_C_TYPE_FIXED32: kind = .fixed(bits: 32, signed: false)
            case PROTOBUF_C_TYPE_SFIXED64: kind = .fixed(bits: 64, signed: true)
            case PROTOBUF_C_TYPE_FIXED64: kind = .fixed(bits: 64, signed: false)
            case PROTOBUF_C_TYPE_ENUM: kind = .enumeration
            case PROTOBUF_C_TYPE_BOOL: kind = .bool
            case PROTOBUF_C_TYPE_FLOAT, PROTOBUF_C_TYPE_DOUBLE: kind = .floatingPoint
            case PROTOBUF_C_TYPE_STRING: kind = .string
            case PROTOBUF_C_TYPE_BYTES: kind = .bytes
            default:
                kind = .message(message(field.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self), &known))
            }
            return WireFieldShape(name: String(cString: field.name), number: field.id, repeated: field.label == PROTOBUF_C_LABEL_REPEATED, kind: kind)
        }
        shape.set(fields)
        return shape
    }
}

/// Decodes one method's request as its server does (strings checked, integers through the
/// check given). Generated for every method (`WireServices.requestDecoders`), so the request
/// fuzzer and the contract tests cover a new method without being told.
public struct WireRequestDecoder: Sendable {
    /// `licensing.v1.Issuance/IssueLicense`.
    public let method: String
    private let body: @Sendable ([UInt8], @escaping WireIntegerCheck) throws(WireError) -> Void

    public init<Request, Response>(_ method: WireMethod<Request, Response>) {
        self.method = method.name
        self.body = { bytes, check throws(WireError) in _ = try Request(serializedBytes: bytes, integers: check) }
    }

    public func decode(_ bytes: [UInt8], integers: @escaping WireIntegerCheck) throws(WireError) {
        try body(bytes, integers)
    }
}
