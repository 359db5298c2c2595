import CLicensingProto

/// Owns the C memory a message points into while protobuf-c packs it, and frees it all
/// at once afterwards. Also holds the readers that copy unpacked C values into Swift.
public final class WireArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    init() {}

    deinit {
        for block in blocks { block.deallocate() }
    }

    private func allocate<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: MemoryLayout<T>.stride * count, alignment: MemoryLayout<T>.alignment)
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    /// A NUL-terminated copy. protobuf-c treats the empty string as unset, as proto3 does.
    public func string(_ value: String) -> UnsafeMutablePointer<CChar> {
        var value = value
        return value.withUTF8 { utf8 in
            let out = allocate(CChar.self, count: utf8.count + 1)
            utf8.withMemoryRebound(to: CChar.self) { source in
                if let base = source.baseAddress { out.update(from: base, count: utf8.count) }
            }
            out[utf8.count] = 0
            return out
        }
    }

    public func bytes(_ value: [UInt8]) -> ProtobufCBinaryData {
        guard !value.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let out = allocate(UInt8.self, count: value.count)
        value.withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: value.count) }
        return ProtobufCBinaryData(len: value.count, data: out)
    }

    public func message<M: ProtobufCMessageBinding>(_ value: M) -> UnsafeMutablePointer<M.CMessage> {
        let out = allocate(M.CMessage.self, count: 1)
        out.initialize(to: M.cNew())
        value.fill(&out.pointee, self)
        return out
    }

    public func array<S, C>(_ values: [S], _ transform: (S) -> C) -> UnsafeMutablePointer<C>? {
        guard !values.isEmpty else { return nil }
        let out = allocate(C.self, count: values.count)
        for (index, value) in values.enumerated() {
            (out + index).initialize(to: transform(value))
        }
        return out
    }

    // MARK: Reading unpacked C values

    public static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer)
    }

    public static func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
        guard data.len > 0, let base = data.data else { return [] }
        return Array(UnsafeBufferPointer(start: base, count: data.len))
    }

    public static func array<C, S>(_ count: Int, _ base: UnsafeMutablePointer<C>?, _ transform: (C) -> S) -> [S] {
        guard count > 0, let base else { return [] }
        return UnsafeBufferPointer(start: base, count: count).map(transform)
    }
}
