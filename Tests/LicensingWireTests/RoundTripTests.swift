import LicensingWire
import NIOCore
import Testing

/// Messages with every kind of field the contracts use, filled with non-default values.
enum Samples {
    static let envelope = Envelope(
        callId: UInt64.max - 7,
        kind: .streamEnd,
        method: "licensing.v1.Validation/Validate",
        payload: [0, 1, 2, 0xFF, 0x80, 0x7F, 0, 0],
        timeoutMicros: -1_234_567_890_123,
        metadata: [
            MetadataEntry(key: "authorization", value: "Bearer lm_abc"),
            MetadataEntry(key: "trace-id", value: "ünïcødé ✓ 🚀"),
            MetadataEntry(key: "empty-value", value: ""),
        ],
        status: Status(code: .resourceExhausted, message: "quota \"exceeded\"")
    )

    static let license = License(
        id: "lic_01",
        productId: "prod_01",
        policyId: "pol_01",
        customerId: "cus_01",
        departmentId: "dep_01",
        licenseType: .enterprise,
        state: .inGrace,
        keyPrefix: "LM1-ABCD",
        issuedAt: 1_700_000_000,
        startsAt: -1,
        expiresAt: Int64.max,
        graceSeconds: Int64.min,
        maxMachines: UInt32.max,
        maxUsers: 1,
        maxSeats: 250,
        features: ["sso", "audit", "", "export"],
        allowedRegions: ["DE", "FR"],
        deniedRegions: ["KP"],
        overagePermille: 1250,
        checkInIntervalSeconds: 86_400,
        tenantId: "ten_01",
        updatedAt: 1_700_000_123,
        namedUsers: ["alice@example.com", "bob@example.com"],
        stateReason: "payment overdue"
    )

    static let changeEvent = ChangeEvent(
        seq: 42,
        kind: .license,
        action: "license.suspended",
        occurredAt: 1_700_000_456,
        keyHash: String(repeating: "ab", count: 32),
        subject: .license(license)
    )

    static let subscriptionEvent = ChangeEvent(
        seq: 43, kind: .subscription, action: "subscription.past_due", occurredAt: 1_700_000_457,
        subject: .subscription(Subscription(
            id: "sub_01", licenseId: "lic_01", billingRef: "inv-9", periodStart: 1, periodEnd: 2,
            status: .pastDue, autoRenew: true, amountMinor: -500, currency: "EUR")))
}

@Suite("Round trips through protobuf-c")
struct RoundTripTests {
    @Test func envelopeWithMetadataStatusAndBytes() throws {
        let bytes = Samples.envelope.serializedBytes()
        #expect(!bytes.isEmpty)
        #expect(bytes.count == Samples.envelope.serializedSize)
        let decoded = try Envelope(serializedBytes: bytes)
        #expect(decoded == Samples.envelope)
        // Encoding is deterministic: the decoded value encodes to the same bytes.
        #expect(decoded.serializedBytes() == bytes)
    }

    @Test func licenseWithRepeatedStringsEnumsAndInt64s() throws {
        let bytes = Samples.license.serializedBytes()
        #expect(bytes.count == Samples.license.serializedSize)
        let decoded = try License(serializedBytes: bytes)
        #expect(decoded == Samples.license)
        #expect(decoded.features == ["sso", "audit", "", "export"])
        #expect(decoded.graceSeconds == Int64.min)
        #expect(decoded.maxMachines == UInt32.max)
    }

    @Test func changeEventWithNestedMessages() throws {
        let bytes = Samples.changeEvent.serializedBytes()
        let decoded = try ChangeEvent(serializedBytes: bytes)
        #expect(decoded == Samples.changeEvent)
        #expect(decoded.subject == .license(Samples.license))
        let other = try ChangeEvent(serializedBytes: Samples.subscriptionEvent.serializedBytes())
        guard case .subscription(let subscription)? = other.subject else {
            Issue.record("the oneof lost its case: \(String(describing: other.subject))")
            return
        }
        #expect(subscription.autoRenew == true)
        #expect(try ChangeEvent(serializedBytes: ChangeEvent(seq: 1).serializedBytes()).subject == nil)
    }

    /// The oneof replaced seven optional fields with the same numbers: what an older issuance
    /// wrote (one message field set) reads as the matching case.
    @Test func theOneofReadsEventsWrittenBeforeIt() throws {
        // Field 7 (product), length-delimited, holding Product.id = "p".
        let older: [UInt8] = [0x08, 0x01, 0x3A, 0x03, 0x0A, 0x01, 0x70]
        #expect(try ChangeEvent(serializedBytes: older).subject == .product(Product(id: "p")))
    }

    @Test func presentButEmptyNestedMessageStaysPresent() throws {
        // A set sub-message with all defaults is still sent (as a zero-length field).
        let envelope = Envelope(callId: 1, status: Status())
        let decoded = try Envelope(serializedBytes: envelope.serializedBytes())
        #expect(decoded.status == Status())
        let without = try Envelope(serializedBytes: Envelope(callId: 1).serializedBytes())
        #expect(without.status == nil)
    }

    @Test func emptyMessagesEncodeToNothingAndDecode() throws {
        #expect(HealthCheckRequest().serializedBytes() == [])
        #expect(HealthCheckRequest().serializedSize == 0)
        #expect(Envelope().serializedBytes() == [])
        #expect(License().serializedBytes() == [])
        #expect(ChangeEvent().serializedBytes() == [])
        #expect(try Envelope(serializedBytes: []) == Envelope())
        #expect(try License(serializedBytes: []) == License())
        #expect(try HealthCheckRequest(serializedBytes: []) == HealthCheckRequest())
        #expect(try Envelope(buffer: ByteBuffer()) == Envelope())

        var buffer = ByteBuffer()
        HealthCheckRequest().serialize(into: &buffer)
        #expect(buffer.readableBytes == 0)
    }

    @Test func largePayloadRoundTrips() throws {
        let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let envelope = Envelope(callId: 9, payload: payload)
        let decoded = try Envelope(serializedBytes: envelope.serializedBytes())
        #expect(decoded.payload == payload)
    }
}
