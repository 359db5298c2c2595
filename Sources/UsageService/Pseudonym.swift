import Crypto
import Foundation

/// Named users are personal data, which only issuance stores (../DESIGN.md): usage keeps
/// a pseudonym, enough to count distinct users, that names no one.
enum Pseudonym {
    static func user(_ name: String, tenant: String) -> String {
        let digest = SHA256.hash(data: Array("\(tenant)\u{1F}\(name)".utf8))
        return "u-" + digest.prefix(12).map { String(format: "%02x", $0) }.joined()
    }
}
