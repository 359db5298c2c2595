import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire
import NIOCore
import NIOEmbedded
import Testing

/// The seed corpus of the libFuzzer targets in Tests/Fuzz: valid inputs the fuzzers start
/// from and mutate. `LM_WRITE_FUZZ_CORPUS=1 swift test --filter FuzzCorpusTests` writes it;
/// without that, the test checks that every committed seed is still valid input for its
/// target as the contracts change (a seed that no longer decodes teaches a fuzzer nothing).
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")
    /// Must match Tests/Fuzz/offline-file.
    static let signingKey = try! CertificateSigningKey(privateKey: Array(repeating: 5, count: 32))
    static let licenseKey: LicenseKey = {
        for check in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" {
            if let key = try? LicenseKey(parsing: "1" + String(repeating: "0", count: 26) + String(check)) { return key }
        }
        fatalError("no check symbol completes the fuzz license key")
    }()
    static let now: Int64 = 1_800_000_000

    /// Requests as clients send them; every other method gets its empty request.
    static func sampleRequests() -> [String: [UInt8]] {
        [
            ValidationMethods.validate.name: ValidateRequest(
                licenseKey: LicenseKey.generate().description, fingerprint: "host-1", feature: "export", user: "ana", region: "DE",
                nonce: Array(repeating: 1, count: 16)).serializedBytes(),
            ValidationMethods.activate.name: ActivateRequest(licenseKey: LicenseKey.generate().description, fingerprint: "host-1", machineName: "cad-7", platform: "linux").serializedBytes(),
            IssuanceMethods.issueLicense.name: IssueLicenseRequest(policyId: "pol_1", customerId: "cus_1", billingRef: "inv-1", amountMinor: 129_00, currency: "EUR").serializedBytes(),
            IssuanceMethods.createPolicy.name: CreatePolicyRequest(policy: Policy(
                productId: "prod_1", name: "Standard", licenseType: .subscription, durationSeconds: 31_536_000, graceSeconds: 604_800,
                maxSeats: 5, features: ["export", "render"], overagePermille: 1100)).serializedBytes(),
            IssuanceMethods.changes.name: ChangesRequest(afterSeq: 42, limit: 1000).serializedBytes(),
            UsageMethods.recordUsage.name: RecordUsageRequest(events: [
                UsageEvent(eventId: "ev-1", licenseKey: LicenseKey.generate().description, feature: "render", quantity: 3, occurredAt: now, user: "ana"),
            ]).serializedBytes(),
        ]
    }

    static func seeds() throws -> [String: [(String, [UInt8])]] {
        var seeds: [String: [(String, [UInt8])]] = [:]
        let requests = sampleRequests()
        let decoders = WireServices.requestDecoders
        seeds["requests"] = decoders.enumerated().map { index, decoder in
            let name = decoder.method.split(separator: "/").joined(separator: "-").replacingOccurrences(of: "licensing.v1.", with: "")
            return (name, [UInt8(index >> 8), UInt8(index & 0xff)] + (requests[decoder.method] ?? []))
        }
        let envelopes: [Envelope] = requests.sorted { $0.key < $1.key }.enumerated().map { index, request in
            Envelope(callId: UInt64(index + 1), kind: .request, method: request.key, payload: request.value, timeoutMicros: 5_000_000,
                     metadata: [MetadataEntry(key: RPCMetadata.apiKey, value: "lm_key_abc"), MetadataEntry(key: RPCMetadata.traceID, value: "t-\(index)")])
        } + [
            Envelope(callId: 9, kind: .response, metadata: [MetadataEntry(key: "retry-after", value: "2")],
                     status: Status(code: .resourceExhausted, message: "rate limit")),
            Envelope(callId: 9, kind: .cancel),
        ]
        seeds["envelope"] = envelopes.enumerated().map { ("envelope-\($0.offset)", $0.element.serializedBytes()) }
        // Frames: the first byte says where the stream is cut.
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addEnvelopeFraming(limits: FrameLimits())
        var stream: [UInt8] = []
        for envelope in envelopes {
            try channel.writeOutbound(envelope)
            while var buffer = try channel.readOutbound(as: ByteBuffer.self) { stream += buffer.readBytes(length: buffer.readableBytes)! }
        }
        seeds["frames"] = [("all-at-once", [255] + stream), ("byte-by-byte", [0] + stream), ("seven-at-a-time", [6] + stream)]

        let key = LicenseKey.generate()
        seeds["license-key"] = [
            ("typed", key.description), ("lower-case", key.description.lowercased()),
            ("spaced", key.description.replacingOccurrences(of: "-", with: " ")), ("imported", "SERIAL-2024-00042-XK"),
        ].map { ($0.0, Array($0.1.utf8)) }

        var payload = CertificatePayload(
            version: LicenseCertificates.currentVersion, licenseId: "lic_1", productId: "prod_1", customerId: "cus_1", licenseType: .perDevice,
            features: ["export"], notBefore: now - 3600, notAfter: now + 86400 * 30, licenseExpiresAt: now + 86400 * 365,
            fingerprintSha256: LicenseCertificates.fingerprintHash("fuzz-machine"), issuedAt: now - 3600, maxMachines: 3)
        let certificate = try LicenseCertificates.sign(payload, with: signingKey).armored
        payload.fingerprintSha256 = ""
        let unbound = try LicenseCertificates.sign(payload, with: signingKey).armored
        let statement = ValidationStatement(
            version: 1, reason: .valid, licenseId: "lic_1", expiresAt: now + 86400, features: ["export"], serverTime: now,
            nonce: Array(repeating: 1, count: 16)).serializedBytes()
        let answer = ValidateResponse(
            reason: .valid, valid: true, licenseId: "lic_1", serverTime: now, kid: signingKey.kid, signature: signingKey.sign(statement), statement: statement)
        seeds["offline-file"] = [
            ("certificate", Array(certificate.utf8)), ("unbound-certificate", Array(unbound.utf8)),
            ("encrypted-file", Array(OfflineLicenseFile.encrypt(certificate, licenseKey: licenseKey).utf8)),
            ("signed-answer", answer.serializedBytes()),
        ]
        seeds["geo-table"] = [("table", Array("# CIDR,COUNTRY\n81.2.69.0/24,GB\n10.0.0.0/8,DE\n2001:db8::/32,FR\n0.0.0.0/0,US # default\n".utf8))]
        return seeds
    }

    /// Whether a seed is input its target gets past the first checks with.
    static func isValid(_ bytes: [UInt8], for target: String) throws -> Bool {
        switch target {
        case "requests":
            let decoders = WireServices.requestDecoders
            guard bytes.count >= 2 else { return false }
            try decoders[(Int(bytes[0]) << 8 | Int(bytes[1])) % decoders.count].decode(Array(bytes.dropFirst(2)), integers: RequestBounds.check)
            return true
        case "envelope":
            return (try? Envelope(serializedBytes: bytes)) != nil
        case "frames":
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addEnvelopeFraming(limits: FrameLimits())
            try channel.writeInbound(ByteBuffer(bytes: bytes.dropFirst()))
            var envelopes = 0
            while let frame = try channel.readInbound(as: InboundFrame.self) {
                guard case .envelope = frame else { return false }
                envelopes += 1
            }
            return envelopes > 0
        case "license-key":
            let text = String(decoding: bytes, as: UTF8.self)
            return (try? LicenseKey(parsing: text)) != nil || (try? ImportedKey(parsing: text)) != nil
        case "offline-file":
            let keys = [signingKey.kid: signingKey.publicKey]
            if let response = try? ValidateResponse(serializedBytes: bytes), !response.statement.isEmpty {
                return (try? ValidationAnswer.verify(response, nonce: Array(repeating: 1, count: 16), publicKeys: keys, now: now)) != nil
            }
            let text = String(decoding: bytes, as: UTF8.self)
            return (try? LicenseCertificates.verify(text, publicKeys: keys, now: now, fingerprint: "fuzz-machine")) != nil
                || (try? OfflineLicenseFile.verify(text, licenseKey: licenseKey, publicKeys: keys, fingerprint: "fuzz-machine", now: now, lastSeen: 0)) != nil
        case "geo-table":
            return (try? GeoTable(parsing: String(decoding: bytes, as: UTF8.self))) != nil
        default:
            return false
        }
    }

    @Test func everyTargetHasValidSeeds() throws {
        let seeds = try Self.seeds()
        if ProcessInfo.processInfo.environment["LM_WRITE_FUZZ_CORPUS"] == "1" {
            for (target, files) in seeds {
                let folder = Self.corpus.appendingPathComponent(target)
                try? FileManager.default.removeItem(at: folder)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                for (name, bytes) in files { try Data(bytes).write(to: folder.appendingPathComponent(name)) }
            }
        }
        let fuzzers = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.deletingLastPathComponent().path).filter { $0 != "corpus" }
        #expect(Set(fuzzers) == Set(seeds.keys), "every fuzz target has seeds, and every seed folder a target")
        for target in seeds.keys.sorted() {
            let folder = Self.corpus.appendingPathComponent(target)
            let files = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            #expect(!files.isEmpty, "no seeds for \(target)")
            for file in files {
                let bytes = Array(try Data(contentsOf: folder.appendingPathComponent(file)))
                #expect(try Self.isValid(bytes, for: target), "\(target)/\(file) is no longer valid input; rewrite the corpus (LM_WRITE_FUZZ_CORPUS=1)")
            }
        }
        // A new method gets a seed of its own when the corpus is written.
        #expect(seeds["requests"]?.count == WireServices.all.reduce(0) { $0 + $1.methods.count })
    }
}
