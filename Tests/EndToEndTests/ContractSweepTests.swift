import Foundation
import LicensingRPC
import LicensingWire
import Testing

/// Every integer and string field of every request of every service, reached through the
/// descriptors protoc-c generates (nested and repeated messages included): a field added to a
/// contract is swept without anyone listing it. The services run as real processes, so a
/// trap would end one and show as a service that no longer answers.
@Suite(.serialized) struct ContractSweepTests {
    /// A field path from the request down to a leaf, at most this deep.
    static let maximumDepth = 3

    static func paths(_ message: WireMessageShape, prefix: [WireFieldShape] = [], where leaf: (WireFieldShape) -> Bool) -> [[WireFieldShape]] {
        var found: [[WireFieldShape]] = []
        for field in message.fields {
            if case .message(let nested) = field.kind {
                guard prefix.count + 1 < maximumDepth else { continue }
                found += paths(nested, prefix: prefix + [field], where: leaf)
            } else if leaf(field) {
                found.append(prefix + [field])
            }
        }
        return found
    }

    /// Encodes a message holding only `path`, whose leaf carries `value` (wire type and bytes).
    static func encode(_ path: [WireFieldShape], wireType: UInt64, _ value: [UInt8]) -> [UInt8] {
        var bytes = RawProto.varint(UInt64(path.last!.number) << 3 | wireType) + value
        for field in path.dropLast().reversed() {
            bytes = RawProto.varint(UInt64(field.number) << 3 | 2) + RawProto.varint(UInt64(bytes.count)) + bytes
        }
        return bytes
    }

    /// 0, -1, the minimum and the maximum of the field's type, as what goes on the wire and
    /// as the integer the server reads.
    static func extremes(_ kind: WireFieldShape.Kind) -> [(wireType: UInt64, bytes: [UInt8], value: WireInteger)] {
        switch kind {
        case .varint(let bits, let signed, let zigzag):
            let values: [WireInteger] = signed
                ? [.signed(0), .signed(-1), .signed(bits == 32 ? Int64(Int32.min) : .min), .signed(bits == 32 ? Int64(Int32.max) : .max)]
                : [.unsigned(0), .unsigned(bits == 32 ? UInt64(UInt32.max) : .max), .unsigned(1 << (bits - 1)), .unsigned((1 << (bits - 1)) - 1)]
            return values.map { value in
                switch value {
                case .signed(let number):
                    let raw = zigzag ? UInt64(bitPattern: (number << 1) ^ (number >> 63)) : UInt64(bitPattern: number)
                    return (0, RawProto.varint(raw), value)
                case .unsigned(let number):
                    return (0, RawProto.varint(number), value)
                }
            }
        case .enumeration:
            return [Int64(0), -1, Int64(Int32.min), Int64(Int32.max)].map { (0, RawProto.varint(UInt64(bitPattern: $0)), .signed($0)) }
        case .fixed(let bits, let signed):
            let width = bits / 8
            let raws: [UInt64] = bits == 32 ? [0, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF] : [0, .max, 1 << 63, (1 << 63) - 1]
            return raws.map { raw in
                let value: WireInteger = signed
                    ? .signed(bits == 32 ? Int64(Int32(truncatingIfNeeded: raw)) : Int64(bitPattern: raw)) : .unsigned(raw)
                return (bits == 32 ? 5 : 1, (0..<width).map { UInt8(truncatingIfNeeded: raw >> (8 * UInt64($0))) }, value)
            }
        default:
            return []
        }
    }

    static func isInteger(_ field: WireFieldShape) -> Bool { !extremes(field.kind).isEmpty }

    static func isString(_ field: WireFieldShape) -> Bool {
        if case .string = field.kind { return true }
        return false
    }

    /// Which process answers a service's methods in this sweep.
    static func owner(_ service: WireServiceShape) -> String? {
        switch service.name {
        case "licensing.v1.Issuance": return "issuance"
        case "licensing.v1.Validation": return "validation"
        case "licensing.v1.Usage": return "usage"
        case "licensing.v1.Reporting": return "reporting"
        case "licensing.v1.Integrations": return "integrations"
        case "licensing.v1.Gateway": return "gateway"
        case "licensing.v1.Health", "licensing.v1.Backup": return nil  // every process; swept at the gateway
        default: return "unknown"
        }
    }

    /// One call, unary or streaming: the status it ended with.
    static func call(_ client: RPCClient, _ method: String, _ payload: [UInt8]) async -> RPCError? {
        let deadline = ContinuousClock.now + .seconds(10)
        do {
            if streamingMethods.contains(method) {
                // A feed that has nothing more waits for news: one message or a short wait is enough.
                let stream = try await client.streamRaw(method, payload: payload, metadata: [:], deadline: ContinuousClock.now + .milliseconds(300))
                for try await _ in stream { break }
            } else {
                _ = try await client.callRaw(method, payload: payload, metadata: [:], deadline: deadline)
            }
            return nil
        } catch let error as RPCError {
            return error
        } catch {
            return RPCError(.unknown, "\(error)")
        }
    }

    /// A client per process: the gateway with the operator's key, the services directly;
    /// and the gateway with the credentials its holder and console methods take (a holder
    /// token, the console's key), so that the sweep reaches their request checks.
    static func clients(_ stack: Stack) async throws -> [String: RPCClient] {
        let admin = stack.gatewayClient()
        var clients: [String: RPCClient] = ["gateway": admin]
        for service in ["issuance", "validation", "usage", "reporting", "integrations"] { clients[service] = RPCClient(endpoint: stack.endpoint(service)) }
        let console = try await admin.call(GatewayMethods.createApiKey, CreateApiKeyRequest(name: "console", role: .console)).secret
        clients["gateway:console"] = stack.gatewayClient(apiKey: console)
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Sweep", code: "SWEEP"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(productId: product.id, name: "Sweep", licenseType: .perDevice, maxMachines: 2)))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Sweep"))
        let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let holder = try await clients["gateway:console"]!.call(GatewayMethods.signInHolder, SignInHolderRequest(licenseKey: issued.licenseKey)).holderToken
        clients["gateway:holder"] = stack.gatewayClient(apiKey: holder)
        return clients
    }

    /// The client a method is swept through.
    static func client(_ clients: [String: RPCClient], _ service: WireServiceShape, _ method: String) -> RPCClient? {
        let owner = owner(service) ?? "gateway"
        guard owner == "gateway" else { return clients[owner] }
        let name = method.split(separator: "/").last.map(String.init) ?? ""
        if name.hasPrefix("Holder") { return clients["gateway:holder"] }
        if name == "SignInHolder" || name == "RevealLicenseKey" { return clients["gateway:console"] }
        return clients["gateway"]
    }

    static let streamingMethods: Set<String> = Set(
        [IssuanceMethods.all, ValidationMethods.all, UsageMethods.all, ReportingMethods.all, GatewayMethods.all]
            .flatMap { $0 }.filter(\.serverStreaming).map(\.name))

    @Test func everyIntegerFieldOfEveryRequestAtItsExtremes() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let clients = try await Self.clients(stack)
        defer { for client in clients.values { Task { await client.close() } } }

        var calls = 0
        var refused = 0
        for service in WireServices.all {
            let owner = Self.owner(service) ?? "gateway"
            #expect(owner != "unknown", "a new service, \(service.name), needs its owner in this sweep")
            for method in service.methods {
                let client = try #require(Self.client(clients, service, method.fullName))
                for path in Self.paths(method.request, where: Self.isInteger) {
                    let dotted = path.map(\.name).joined(separator: ".")
                    for extreme in Self.extremes(path.last!.kind) {
                        calls += 1
                        let error = await Self.call(client, method.fullName, Self.encode(path, wireType: extreme.wireType, extreme.bytes))
                        let code = error?.code
                        #expect(code != StatusCode.internal && code != StatusCode.unavailable && code != StatusCode.unknown,
                                "\(method.fullName) \(dotted)=\(extreme.value): \(error?.description ?? "")")
                        // A method whose handler has not landed decodes nothing.
                        if code == .unimplemented { continue }
                        if owner != "gateway", RequestBounds.check(path.last!.name, extreme.value) != nil {
                            refused += 1
                            #expect(code == .invalidArgument && error?.message.hasPrefix(dotted) == true,
                                    "\(method.fullName) \(dotted)=\(extreme.value) is out of range but got \(error?.description ?? "OK")")
                        }
                    }
                }
            }
        }
        #expect(calls > 250, "the sweep found only \(calls) calls to make")
        #expect(refused > 100)
        for service in ["issuance", "validation", "usage", "reporting", "integrations", "gateway"] {
            let health = RPCClient(endpoint: stack.endpoint(service))
            let answer = try? await health.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(5))
            #expect(answer?.status == .serving, "\(service) does not answer after the sweep; log: \(stack.log(service).suffix(2000))")
            await health.close()
        }
    }

    @Test func everyStringFieldRefusesNulInvalidUTF8AndOversizedText() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let clients = try await Self.clients(stack)
        defer { for client in clients.values { Task { await client.close() } } }

        let bad: [(String, [UInt8], String)] = [
            ("NUL", Array("key\u{0}trailing-junk".utf8), "holds a NUL byte"),
            ("invalid UTF-8", [0x61, 0xC3, 0x28, 0xFF], "is not valid UTF-8"),
            ("oversized", [UInt8](repeating: 0x61, count: 9000), "bytes long"),
        ]
        var calls = 0
        for service in WireServices.all {
            for method in service.methods {
                let client = try #require(Self.client(clients, service, method.fullName))
                for path in Self.paths(method.request, where: Self.isString) {
                    let dotted = path.map(\.name).joined(separator: ".")
                    for (label, bytes, problem) in bad {
                        calls += 1
                        let payload = Self.encode(path, wireType: 2, RawProto.varint(UInt64(bytes.count)) + bytes)
                        let error = await Self.call(client, method.fullName, payload)
                        if error?.code == .unimplemented { continue }
                        // The gateway checks the credential first; behind it, the request.
                        let expected = error?.code == .invalidArgument && error?.message.hasPrefix(dotted) == true && error?.message.contains(problem) == true
                        #expect(expected, "\(method.fullName) \(dotted) with \(label): \(error?.description ?? "accepted")")
                    }
                }
            }
        }
        #expect(calls > 300, "the sweep found only \(calls) calls to make")
    }
}

extension ContractSweepTests {
    /// Refusing everything must not pass: values at the top of their ranges work from issue
    /// to validate, renew and offline file; one past the top is refused, naming the field.
    @Test func valuesAtTheEdgeOfTheirRangesWorkEndToEnd() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let gateway = stack.gatewayClient()
        defer { Task { await gateway.close() } }

        let product = try await gateway.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Edge", code: "EDGE"))
        let customer = try await gateway.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Edge Ltd", email: "edge@example.test"))
        let longest = RequestBounds.maximumDurationSeconds
        let policy = try await gateway.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Century", licenseType: .perDevice, durationSeconds: longest, graceSeconds: longest,
            maxMachines: UInt32(RequestBounds.maximumCount), checkInIntervalSeconds: longest)))
        #expect(policy.graceSeconds == longest)

        // The values that trapped license-validation and license-issuance are refused where they enter.
        for (field, bad) in [("policy.grace_seconds", Policy(productId: product.id, name: "Trap", graceSeconds: .max)),
                             ("policy.duration_seconds", Policy(productId: product.id, name: "Trap", durationSeconds: .max)),
                             ("policy.grace_seconds", Policy(productId: product.id, name: "Trap", graceSeconds: -1))] {
            let error = await #expect(throws: RPCError.self) {
                _ = try await gateway.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: bad))
            }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.hasPrefix("\(field) must be between 0 and \(longest)") == true, "\(error?.message ?? "")")
        }
        let error = await #expect(throws: RPCError.self) {
            _ = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(
                policyId: policy.id, customerId: customer.id, overrides: LicenseOverrides(expiresAt: .max)))
        }
        #expect(error?.message.hasPrefix("overrides.expires_at must be between 0 and 253402300799") == true, "\(error?.message ?? "")")

        let century = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        let lastDay = try await gateway.call(IssuanceMethods.issueLicense, IssueLicenseRequest(
            policyId: policy.id, customerId: customer.id, overrides: LicenseOverrides(expiresAt: RequestBounds.maximumTimestamp)))
        for issued in [century, lastDay] {
            let activated = try await gateway.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: "edge-1"))
            #expect(activated.reason == .valid)
            let answer = try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, fingerprint: "edge-1"))
            #expect(answer.reason == .valid)
            // One policy period past 9999-12-31 stops there.
            let extendTo = issued.license!.expiresAt == RequestBounds.maximumTimestamp ? 0 : RequestBounds.maximumTimestamp
            let renewed = try await gateway.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: issued.license!.id, extendTo: extendTo))
            #expect(renewed.expiresAt == RequestBounds.maximumTimestamp)
            let offline = try await gateway.call(ValidationMethods.createOfflineLicense, CreateOfflineLicenseRequest(
                licenseKey: issued.licenseKey, fingerprint: "edge-1", validSeconds: 86_400))
            #expect(offline.notAfter > offline.notBefore)
            #expect(try await gateway.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, fingerprint: "edge-1")).reason == .valid)
        }
        for service in ["issuance", "validation"] {
            let health = RPCClient(endpoint: stack.endpoint(service))
            #expect(try await health.call(HealthMethods.check, HealthCheckRequest()).status == .serving)
            await health.close()
        }
    }
}

enum RawProto {
    static func varint(_ value: UInt64) -> [UInt8] {
        var value = value
        var out: [UInt8] = []
        while value >= 0x80 {
            out.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
        return out
    }
}
