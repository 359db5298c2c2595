import Crypto
import Foundation

/// Webhook signatures, Stripe's scheme: a header `t=<unix seconds>,v1=<hex>` where the hex
/// is HMAC-SHA256 under the shared secret of `<t>.<raw body>`. Inbound events are checked
/// against every secret currently accepted (two during a rotation); outbound deliveries
/// are signed the same way.
enum WebhookSignature {
    /// How far a signature's time may be from now.
    static let tolerance: Int64 = 300

    enum Failure: Error, Equatable, CustomStringConvertible {
        case missing
        case malformed
        case stale(Int64)
        case mismatch

        var description: String {
            switch self {
            case .missing: "the signature header is missing"
            case .malformed: "the signature header is not t=<unix seconds>,v1=<hex HMAC-SHA256>"
            case .stale(let seconds): "the signature's timestamp is \(seconds) s from now, more than the \(WebhookSignature.tolerance) s allowed"
            case .mismatch: "the signature does not match any signing secret (check the secret, and that the body is the raw bytes sent)"
            }
        }
    }

    static func sign(_ body: [UInt8], secret: String, at time: Int64) -> String {
        "t=\(time),v1=\(hex(mac(body, secret: secret, time: time)))"
    }

    /// Checks a header against the body and the accepted secrets.
    static func verify(header: String?, body: [UInt8], secrets: [String], now: Int64) throws(Failure) {
        guard let header, !header.isEmpty else { throw .missing }
        var time: Int64?
        var signatures: [[UInt8]] = []
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { throw .malformed }
            switch pair[0] {
            case "t":
                guard let value = Int64(pair[1]) else { throw .malformed }
                time = value
            case "v1":
                guard let bytes = unhex(pair[1]), bytes.count == 32 else { throw .malformed }
                signatures.append(bytes)
            default:
                continue  // v0 and schemes to come are ignored, as Stripe does.
            }
        }
        guard let time, !signatures.isEmpty else { throw .malformed }
        let skew = now > time ? now - time : time - now
        guard skew <= tolerance else { throw .stale(skew) }
        for secret in secrets {
            let expected = mac(body, secret: secret, time: time)
            if signatures.contains(where: { constantTimeEqual($0, expected) }) { return }
        }
        throw .mismatch
    }

    private static func mac(_ body: [UInt8], secret: String, time: Int64) -> [UInt8] {
        var signed = Array("\(time).".utf8)
        signed += body
        return Array(HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: Array(secret.utf8))))
    }

    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func unhex(_ text: String) -> [UInt8]? {
        guard text.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }

    /// A new secret: 32 random bytes, hex, with a prefix that says what it is.
    static func newSecret(prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        return prefix + hex((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }
}
