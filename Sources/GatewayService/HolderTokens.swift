import Crypto
import Foundation
import GRDB
import LicensingCore

/// What a license holder may reach: one license (signed in with its key) or every license
/// of a customer (signed in with a link an operator created), in one tenant, until a time.
struct HolderScope: Sendable, Equatable {
    let tenant: String
    let licenseID: String
    let customerID: String
    let expiresAt: Int64

    /// How the gateway names the holder in the access log and the services' audit.
    var actor: String { licenseID.isEmpty ? "holder:\(customerID)" : "holder:\(licenseID)" }
}

/// A sign-in link: a customer of a tenant, once, until a time.
struct SignInLink: Sendable, Equatable {
    let id: String
    let tenant: String
    let customerID: String
    let expiresAt: Int64
}

/// Holder tokens (`lmh_…`) and sign-in links (`lms_…`): the fields, then an HMAC-SHA256
/// over the kind and the fields under a secret the gateway keeps in its database (so
/// tokens outlive a restart). Nothing is stored per token: a token is good until it
/// expires; a link is good once (its id is recorded when used).
struct HolderTokens: Sendable {
    /// Kept as bytes (SymmetricKey is not Sendable); a key is made per use, which costs nothing next to a sign-in.
    private let secret: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: secret) }
    static let holderTokenSeconds: Int64 = 30 * 60

    init(secret: [UInt8]) {
        self.secret = secret
    }

    /// The secret in the gateway's database, made on first use.
    static func load(from database: DatabasePool) throws -> HolderTokens {
        let secret = try database.write { db -> [UInt8] in
            if let stored = try Data.fetchOne(db, sql: "SELECT secret FROM gateway_secret WHERE name = 'holder-tokens'") { return Array(stored) }
            let fresh = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
            try db.execute(sql: "INSERT INTO gateway_secret (name, secret) VALUES ('holder-tokens', ?)", arguments: [Data(fresh)])
            return fresh
        }
        return HolderTokens(secret: secret)
    }

    func token(_ scope: HolderScope) -> String {
        sign("lmh_", [scope.tenant, scope.licenseID, scope.customerID, String(scope.expiresAt), EntityID.make("ht")])
    }

    func scope(of token: String, now: Int64) -> HolderScope? {
        guard let fields = verify("lmh_", token), fields.count == 5, let expires = Int64(fields[3]), now < expires else { return nil }
        return HolderScope(tenant: fields[0], licenseID: fields[1], customerID: fields[2], expiresAt: expires)
    }

    func link(_ link: SignInLink) -> String {
        sign("lms_", [link.id, link.tenant, link.customerID, String(link.expiresAt)])
    }

    func link(of token: String, now: Int64) -> SignInLink? {
        guard let fields = verify("lms_", token), fields.count == 4, let expires = Int64(fields[3]), now < expires else { return nil }
        return SignInLink(id: fields[0], tenant: fields[1], customerID: fields[2], expiresAt: expires)
    }

    private func sign(_ kind: String, _ fields: [String]) -> String {
        let payload = Array(fields.joined(separator: "\n").utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(kind.utf8) + payload, using: key)
        return kind + Base64URL.encode(payload) + "." + Base64URL.encode(Array(mac))
    }

    private func verify(_ kind: String, _ token: String) -> [String]? {
        guard token.hasPrefix(kind), token.utf8.count <= 600 else { return nil }
        let parts = token.dropFirst(kind.count).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = Base64URL.decode(String(parts[0])), let mac = Base64URL.decode(String(parts[1])),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Array(kind.utf8) + payload, using: key)
        else { return nil }
        return String(decoding: payload, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }
}
