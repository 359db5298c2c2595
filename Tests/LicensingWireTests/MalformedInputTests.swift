import LicensingWire
import NIOCore
import LicensingTestSupport
import Testing

@Suite("Malformed input")
struct MalformedInputTests {
    /// Inputs protobuf-c must refuse for Envelope.
    static let invalid: [(String, [UInt8])] = [
        ("wire type 7", [0x0F]),
        ("wire type 6", [0x0E, 0x00]),
        ("field number 0", [0x00, 0x01]),
        ("truncated varint", [0x08]),
        ("varint longer than 10 bytes", [0x08] + [UInt8](repeating: 0xFF, count: 11) + [0x01]),
        ("length past the end", [0x1A, 0x05, 0x61, 0x62]),
        ("huge length", [0x22, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00]),
        ("call_id sent as length-delimited", [0x0A, 0x01, 0x00]),
        ("method sent as varint", [0x18, 0x01]),
        ("nested status truncated", [0x3A, 0x04, 0x08, 0x03]),
        ("nested status with garbage", [0x3A, 0x01, 0xFF]),
        ("metadata entry with garbage", [0x32, 0x02, 0x0F, 0x00]),
    ]

    @Test(arguments: invalid.indices)
    func invalidBytesThrowUndecodable(_ index: Int) {
        let (name, bytes) = Self.invalid[index]
        #expect(throws: WireError.undecodable(Envelope.protoName), "\(name): \(bytes)") {
            try Envelope(serializedBytes: bytes)
        }
        #expect(throws: WireError.undecodable(Envelope.protoName), "\(name) (ByteBuffer)") {
            try Envelope(buffer: ByteBuffer(bytes: bytes))
        }
    }

    @Test func everyTruncationThrowsOrIsItselfAValidEncoding() throws {
        for message in [Samples.envelope.serializedBytes(), Samples.changeEvent.serializedBytes()] {
            var refused = 0
            for length in 0..<message.count {
                let prefix = Array(message[..<length])
                do {
                    let decoded = try ChangeEventOrEnvelope.decode(prefix, like: message)
                    // A cut at a field boundary is a shorter valid message; it must re-encode to exactly the prefix.
                    #expect(decoded == prefix, "prefix of \(length) bytes decoded to something else")
                } catch {
                    #expect(error == .undecodable(ChangeEventOrEnvelope.name(like: message)))
                    refused += 1
                }
            }
            // Cutting the last byte is always mid-field.
            #expect(throws: WireError.self) { try ChangeEventOrEnvelope.decode(Array(message.dropLast()), like: message) }
            #expect(refused > message.count / 2)
        }
    }

    @Test func randomBytesNeverCrash() {
        var rng = SplitMix64(seed: 0x5EED)
        var refused = 0
        let rounds = 5_000
        for _ in 0..<rounds {
            let count = Int.random(in: 1...96, using: &rng)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            do {
                _ = try Envelope(serializedBytes: bytes)
                _ = try License(serializedBytes: bytes)
                _ = try ChangeEvent(buffer: ByteBuffer(bytes: bytes))
            } catch {
                // Random text is rarely UTF-8 without NUL: those are refused by field.
                if case .invalidField = error { refused += 1; continue }
                #expect(error == .undecodable(Envelope.protoName) || error == .undecodable(License.protoName)
                    || error == .undecodable(ChangeEvent.protoName))
                refused += 1
            }
        }
        // Random bytes are nearly never a valid encoding of all three.
        #expect(refused > rounds * 9 / 10)
    }

    @Test func unknownEnumValuesSurviveARoundTrip() throws {
        var envelope = Envelope(callId: 3, kind: FrameKind(rawValue: 77), status: Status(code: StatusCode(rawValue: 999), message: "x"))
        envelope.metadata = [MetadataEntry(key: "k", value: "v")]
        let decoded = try Envelope(serializedBytes: envelope.serializedBytes())
        #expect(decoded.kind.rawValue == 77)
        #expect(decoded.status?.code.rawValue == 999)
        #expect(decoded.status?.code.description == "StatusCode(999)")
        #expect(decoded == envelope)

        let license = License(licenseType: LicenseType(rawValue: 12345), state: LicenseState(rawValue: Int32.max))
        #expect(try License(serializedBytes: license.serializedBytes()) == license)

        // Negative values are legal int32 enum values on the wire too.
        let negative = Status(code: StatusCode(rawValue: -5))
        #expect(try Status(serializedBytes: negative.serializedBytes()) == negative)

        // An enum value from a newer peer, written by hand: field 2 (kind) = 300.
        let handWritten: [UInt8] = [0x08, 0x01, 0x10, 0xAC, 0x02]
        let fromNewer = try Envelope(serializedBytes: handWritten)
        #expect(fromNewer.callId == 1)
        #expect(fromNewer.kind == FrameKind(rawValue: 300))
        #expect(fromNewer.serializedBytes() == handWritten)
    }

    @Test func unknownFieldsAreSkipped() throws {
        // Field 99 (varint) and field 100 (length-delimited) from a newer contract, then call_id.
        let bytes: [UInt8] = [0x98, 0x06, 0x05, 0xA2, 0x06, 0x02, 0x61, 0x62, 0x08, 0x07]
        let decoded = try Envelope(serializedBytes: bytes)
        #expect(decoded == Envelope(callId: 7))
    }
}

/// Decodes a prefix as the type the full message was, and re-encodes it.
enum ChangeEventOrEnvelope {
    static func isEnvelope(_ message: [UInt8]) -> Bool { message == Samples.envelope.serializedBytes() }

    static func name(like message: [UInt8]) -> String {
        isEnvelope(message) ? Envelope.protoName : ChangeEvent.protoName
    }

    static func decode(_ bytes: [UInt8], like message: [UInt8]) throws(WireError) -> [UInt8] {
        isEnvelope(message)
            ? try Envelope(serializedBytes: bytes).serializedBytes()
            : try ChangeEvent(serializedBytes: bytes).serializedBytes()
    }
}

/// proto3 strings are UTF-8 text; protobuf-c would hand a NUL-cut C string to Swift.
@Suite("Strings on the wire") struct WireStringTests {
    /// `field` (a string field) of GetByIdRequest holding `bytes`, encoded by hand.
    static func request(_ bytes: [UInt8]) -> [UInt8] { [0x0A, UInt8(bytes.count)] + bytes }

    @Test func aNulByteIsRefusedNotCut() {
        #expect(throws: WireError.invalidField("id", "holds a NUL byte; strings must be UTF-8 text without NUL")) {
            try GetByIdRequest(serializedBytes: Self.request(Array("lic_1\u{0}junk".utf8)))
        }
    }

    @Test func invalidUTF8IsRefusedNotReplaced() {
        for bad: [UInt8] in [[0xFF], [0xC3, 0x28], [0xE2, 0x82], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80]] {
            #expect(throws: WireError.invalidField("id", "is not valid UTF-8")) {
                try GetByIdRequest(serializedBytes: Self.request(Array("a".utf8) + bad))
            }
        }
    }

    @Test func validUTF8PassesWhole() throws {
        for text in ["plain", "Müller GmbH", "日本語", "emoji 🎟️"] {
            #expect(try GetByIdRequest(serializedBytes: Self.request(Array(text.utf8))).id == text)
        }
    }

    @Test func nestedAndRepeatedStringsAndEnvelopeMetadataAreChecked() {
        // Envelope.metadata[0].value = "key\0garbage": an API key must not authenticate by its prefix.
        let entry: [UInt8] = [0x0A, 0x01, 0x6B, 0x12, 0x0B] + Array("key\u{0}garbage".utf8)
        let envelope: [UInt8] = [0x32, UInt8(entry.count)] + entry
        #expect(throws: WireError.invalidField("metadata.value", "holds a NUL byte; strings must be UTF-8 text without NUL")) {
            try Envelope(serializedBytes: envelope)
        }
    }
}
