import CLicensingProto

/// An integer field as it arrived, before protobuf-c narrows or reinterprets it.
public enum WireInteger: Sendable, Equatable, CustomStringConvertible {
    case signed(Int64)
    case unsigned(UInt64)

    public var description: String {
        switch self {
        case .signed(let value): return "\(value)"
        case .unsigned(let value): return "\(value)"
        }
    }
}

/// Says what is wrong with an integer field's value (by the field's name), or nil if nothing is.
public typealias WireIntegerCheck = (_ name: String, _ value: WireInteger) -> String?

/// Checks applied to the encoded bytes of a message, guided by protobuf-c's descriptor of it,
/// so that every field of every contract is covered without a hand-kept list.
///
/// - Strings: proto3 requires valid UTF-8, and protobuf-c hands strings over as C strings,
///   which would silently end at a NUL byte. Both are refused, as is a string longer than
///   ``maximumStringBytes``.
/// - Integers (when a visitor is given): each one, with its field's name and path, so that
///   the caller can bound durations, times and counts where requests enter.
enum WireFields {
    /// No string field of the contracts needs more (descriptions and feature lists included).
    static let maximumStringBytes = 8192
    /// Deeper nesting than any contract has: a hostile message cannot recurse the checker deep.
    static let maximumDepth = 16

    typealias IntegerVisitor = WireIntegerCheck

    static func check(
        _ raw: UnsafeRawBufferPointer, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
        integers: IntegerVisitor? = nil
    ) throws(WireError) {
        var path: [UnsafePointer<CChar>] = []
        try walk(raw, descriptor, &path, integers)
    }

    private static func walk(
        _ raw: UnsafeRawBufferPointer, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
        _ path: inout [UnsafePointer<CChar>], _ integers: IntegerVisitor?
    ) throws(WireError) {
        func bad() -> WireError { .undecodable(String(cString: descriptor.pointee.name)) }
        guard path.count < maximumDepth else { throw bad() }
        var reader = Reader(raw)
        while !reader.atEnd {
            guard let tag = reader.varint() else { throw bad() }
            let number = UInt32(truncatingIfNeeded: tag >> 3)
            let field = protobuf_c_message_descriptor_get_field(descriptor, number)
            switch tag & 7 {
            case 0:
                guard let value = reader.varint() else { throw bad() }
                if let field, let integers { try visit(field, varint: value, &path, integers) }
            case 1:
                guard let value = reader.fixed(8) else { throw bad() }
                if let field, let integers { try visit(field, fixed: value, &path, integers) }
            case 5:
                guard let value = reader.fixed(4) else { throw bad() }
                if let field, let integers { try visit(field, fixed: value, &path, integers) }
            case 2:
                guard let bytes = reader.delimited() else { throw bad() }
                guard let field else { continue }
                switch field.pointee.type {
                case PROTOBUF_C_TYPE_STRING:
                    path.append(field.pointee.name)
                    defer { path.removeLast() }
                    try checkString(bytes, path)
                case PROTOBUF_C_TYPE_MESSAGE:
                    path.append(field.pointee.name)
                    defer { path.removeLast() }
                    let nested = field.pointee.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)
                    try walk(bytes, nested, &path, integers)
                case PROTOBUF_C_TYPE_BYTES:
                    break
                default:
                    // A packed repeated scalar: each element in turn.
                    guard let integers else { continue }
                    var packed = Reader(bytes)
                    while !packed.atEnd {
                        switch field.pointee.type {
                        case PROTOBUF_C_TYPE_FIXED64, PROTOBUF_C_TYPE_SFIXED64, PROTOBUF_C_TYPE_DOUBLE:
                            guard let value = packed.fixed(8) else { throw bad() }
                            try visit(field, fixed: value, &path, integers)
                        case PROTOBUF_C_TYPE_FIXED32, PROTOBUF_C_TYPE_SFIXED32, PROTOBUF_C_TYPE_FLOAT:
                            guard let value = packed.fixed(4) else { throw bad() }
                            try visit(field, fixed: value, &path, integers)
                        default:
                            guard let value = packed.varint() else { throw bad() }
                            try visit(field, varint: value, &path, integers)
                        }
                    }
                }
            default:
                // Groups (3, 4) are proto2 only; 6 and 7 do not exist.
                throw bad()
            }
        }
    }

    private static func visit(
        _ field: UnsafePointer<ProtobufCFieldDescriptor>, varint: UInt64, _ path: inout [UnsafePointer<CChar>], _ integers: IntegerVisitor
    ) throws(WireError) {
        let value: WireInteger
        switch field.pointee.type {
        case PROTOBUF_C_TYPE_INT64, PROTOBUF_C_TYPE_INT32, PROTOBUF_C_TYPE_ENUM:
            value = .signed(Int64(bitPattern: varint))
        case PROTOBUF_C_TYPE_SINT64, PROTOBUF_C_TYPE_SINT32:
            value = .signed(Int64(bitPattern: varint >> 1) ^ -Int64(bitPattern: varint & 1))
        case PROTOBUF_C_TYPE_UINT64, PROTOBUF_C_TYPE_UINT32:
            value = .unsigned(varint)
        default:
            return  // bool, or a wire type that does not match the field (protobuf-c decides)
        }
        try report(field, value, &path, integers)
    }

    private static func visit(
        _ field: UnsafePointer<ProtobufCFieldDescriptor>, fixed: UInt64, _ path: inout [UnsafePointer<CChar>], _ integers: IntegerVisitor
    ) throws(WireError) {
        let value: WireInteger
        switch field.pointee.type {
        case PROTOBUF_C_TYPE_SFIXED64: value = .signed(Int64(bitPattern: fixed))
        case PROTOBUF_C_TYPE_SFIXED32: value = .signed(Int64(Int32(truncatingIfNeeded: fixed)))
        case PROTOBUF_C_TYPE_FIXED64, PROTOBUF_C_TYPE_FIXED32: value = .unsigned(fixed)
        default: return
        }
        try report(field, value, &path, integers)
    }

    private static func report(
        _ field: UnsafePointer<ProtobufCFieldDescriptor>, _ value: WireInteger, _ path: inout [UnsafePointer<CChar>], _ integers: IntegerVisitor
    ) throws(WireError) {
        if let problem = integers(String(cString: field.pointee.name), value) {
            path.append(field.pointee.name)
            defer { path.removeLast() }
            throw .invalidField(dotted(path), problem)
        }
    }

    private static func checkString(_ bytes: UnsafeRawBufferPointer, _ path: [UnsafePointer<CChar>]) throws(WireError) {
        guard bytes.count <= maximumStringBytes else {
            throw .invalidField(dotted(path), "is \(bytes.count) bytes long; at most \(maximumStringBytes) are accepted")
        }
        if bytes.contains(0) {
            throw .invalidField(dotted(path), "holds a NUL byte; strings must be UTF-8 text without NUL")
        }
        // Plain ASCII (nearly every string) needs no decoding.
        if bytes.allSatisfy({ $0 < 0x80 }) { return }
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return
            case .error: throw .invalidField(dotted(path), "is not valid UTF-8")
            }
        }
    }

    private static func dotted(_ path: [UnsafePointer<CChar>]) -> String {
        path.map { String(cString: $0) }.joined(separator: ".")
    }

    /// Reads the wire format: varints, fixed-width values and length-delimited slices.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        var atEnd: Bool { offset >= bytes.count }

        mutating func varint() -> UInt64? {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while offset < bytes.count, shift < 64 {
                let byte = bytes[offset]
                offset += 1
                result |= UInt64(byte & 0x7f) << shift
                if byte < 0x80 { return result }
                shift += 7
            }
            return nil
        }

        mutating func fixed(_ width: Int) -> UInt64? {
            guard bytes.count - offset >= width else { return nil }
            var value: UInt64 = 0
            for index in 0..<width { value |= UInt64(bytes[offset + index]) << (8 * UInt64(index)) }
            offset += width
            return value
        }

        mutating func delimited() -> UnsafeRawBufferPointer? {
            guard let length = varint(), length <= UInt64(bytes.count - offset) else { return nil }
            let start = offset
            offset += Int(length)
            return UnsafeRawBufferPointer(rebasing: bytes[start..<offset])
        }
    }
}
