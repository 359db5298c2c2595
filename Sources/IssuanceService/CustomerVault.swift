import Crypto
import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

/// Customers' personal data, encrypted per customer (crypto-shredding).
///
/// Each customer has a data key (AES-256), kept wrapped by the master key in `data_key`,
/// apart from the data. Its name, e-mail and CRM id (`customer.contact`) and its licenses'
/// named users (`license_user.user`) are sealed with it. Erasing the customer destroys the
/// data key, which leaves every copy of those fields — in this file's free pages, in old
/// backups — unreadable. Look-ups go through keyed hashes: CRM ids under an index key
/// (`data_key` owner `index`), named users under the customer's own key.
struct CustomerVault: Sendable {
    let masterKey: MasterKey
    let keyHashSecret: KeyHashSecret

    static let erasedName = "(erased)"
    static let indexOwner = "index"

    struct Contact: Codable {
        var name: String
        var email: String
        var crmId: String
        enum CodingKeys: String, CodingKey {
            case name, email
            case crmId = "crm_id"
        }
    }

    // MARK: Data keys

    /// The owner's data key; made on first use when `create`. Nil once destroyed.
    func dataKey(_ owner: String, create: Bool, in db: Database) throws -> SymmetricKey? {
        if let wrapped = try Data.fetchOne(db.cachedStatement(sql: "SELECT wrapped FROM data_key WHERE owner = ?"), arguments: [owner]) {
            return SymmetricKey(data: try masterKey.open(Array(wrapped), context: Self.context(owner)))
        }
        guard create else { return nil }
        let key = SymmetricKey(size: .bits256)
        let wrapped = key.withUnsafeBytes { masterKey.seal(Array($0), context: Self.context(owner)) }
        try db.execute(sql: "INSERT INTO data_key (owner, wrapped, created_at) VALUES (?, ?, strftime('%s','now'))", arguments: [owner, Data(wrapped)])
        return key
    }

    /// Destroys a customer's data key: what it sealed can never be read again.
    func shred(_ customer: String, in db: Database) throws -> Bool {
        try db.execute(sql: "DELETE FROM data_key WHERE owner = ?", arguments: [customer])
        return db.changesCount > 0
    }

    static func context(_ owner: String) -> String { "data-key\u{0}\(owner)" }

    // MARK: Customers

    /// The keyed hash a CRM id is looked up by; nil when no customer has a CRM id yet.
    func crmHash(tenant: String, crmId: String, create: Bool = true, in db: Database) throws -> String? {
        guard !crmId.isEmpty else { return "" }
        guard let key = try dataKey(Self.indexOwner, create: create, in: db) else { return nil }
        return Hex.encode(Array(HMAC<SHA256>.authenticationCode(for: Array("crm\u{0}\(tenant)\u{0}\(crmId)".utf8), using: key)).prefix(16))
    }

    func insert(_ customer: Customer, in db: Database) throws {
        try db.execute(
            sql: "INSERT INTO customer (id, tenant_id, contact, crm_hash, enterprise, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [
                customer.id, customer.tenantId, try sealContact(customer, in: db), try crmHash(tenant: customer.tenantId, crmId: customer.crmId, in: db),
                customer.enterprise, customer.createdAt,
            ])
    }

    func updateContact(_ customer: Customer, in db: Database) throws {
        try db.execute(
            sql: "UPDATE customer SET contact = ?, crm_hash = ? WHERE id = ?",
            arguments: [try sealContact(customer, in: db), try crmHash(tenant: customer.tenantId, crmId: customer.crmId, in: db), customer.id])
    }

    private func sealContact(_ customer: Customer, in db: Database) throws -> Data {
        let key = try dataKey(customer.id, create: true, in: db)!
        let plain = try JSONEncoder().encode(Contact(name: customer.name, email: customer.email, crmId: customer.crmId))
        return Data(try AES.GCM.seal(plain, using: key, authenticating: Array("customer\u{0}\(customer.id)".utf8)).combined!)
    }

    /// A customer row with its contact opened; an erased customer reads as "(erased)".
    func customer(_ row: Row, in db: Database) throws -> Customer {
        var customer = Customer(
            id: row["id"], name: Self.erasedName, email: "", crmId: "", enterprise: row["enterprise"], createdAt: row["created_at"],
            tenantId: row["tenant_id"])
        if let sealed = row["contact"] as Data?, let key = try dataKey(customer.id, create: false, in: db) {
            let box = try AES.GCM.SealedBox(combined: sealed)
            let contact = try JSONDecoder().decode(Contact.self, from: try AES.GCM.open(box, using: key, authenticating: Array("customer\u{0}\(customer.id)".utf8)))
            customer.name = contact.name
            customer.email = contact.email
            customer.crmId = contact.crmId
        }
        return customer
    }

    func findCustomer(_ id: String, tenant: String, in db: Database) throws -> Customer? {
        try Row.fetchOne(db, sql: "SELECT * FROM customer WHERE id = ? AND tenant_id = ?", arguments: [id, tenant]).map { try customer($0, in: db) }
    }

    /// A page in id order, narrowed to one CRM id when it is given.
    func customers(tenant: String, _ page: Page, crmId: String, in db: Database) throws -> [Customer] {
        guard let hash = try crmHash(tenant: tenant, crmId: crmId, create: false, in: db) else { return [] }
        return try Row.fetchAll(
            db, sql: "SELECT * FROM customer WHERE tenant_id = ? AND (? = '' OR crm_hash = ?) AND id > ? ORDER BY id LIMIT ?",
            arguments: [tenant, hash, hash, page.after, page.size]
        ).map { try customer($0, in: db) }
    }

    /// A customer as the change feed carries it: no personal fields (the services that
    /// show a name ask issuance for it when they show it).
    static func published(_ customer: Customer) -> Customer {
        var published = customer
        published.name = ""
        published.email = ""
        published.crmId = ""
        return published
    }

    /// Seals what the v6 migration moved in unsealed, and takes personal fields out of the
    /// feed's history; then starts a new feed epoch, so followers (validation's named users)
    /// read the history again. Does nothing once done.
    func sealLegacyRows(in db: Database) throws {
        // A sealed contact starts with a random nonce, which may be "{" too: only JSON is legacy.
        let customers = try Row.fetchAll(db, sql: "SELECT * FROM customer WHERE contact IS NOT NULL AND substr(contact, 1, 1) = X'7B'")
            .compactMap { row in (try? JSONDecoder().decode(Contact.self, from: row["contact"] as Data)).map { (row, $0) } }
        let users = try Row.fetchAll(
            db, sql: "SELECT u.*, l.customer_id FROM license_user u JOIN license l ON l.id = u.license_id WHERE u.user_hash LIKE 'legacy:%'")
        guard !customers.isEmpty || !users.isEmpty else { return }
        for (row, contact) in customers {
            try updateContact(
                Customer(
                    id: row["id"], name: contact.name, email: contact.email, crmId: contact.crmId, enterprise: row["enterprise"],
                    createdAt: row["created_at"], tenantId: row["tenant_id"]), in: db)
        }
        var licenses = Set<String>()
        for row in users {
            let license: String = row["license_id"]
            try db.execute(sql: "DELETE FROM license_user WHERE license_id = ? AND user_hash = ?", arguments: [license, row["user_hash"] as String])
            _ = try assign(String(decoding: row["user"] as Data, as: UTF8.self), license: license, customer: row["customer_id"], at: row["assigned_at"], in: db)
            licenses.insert(license)
        }
        let events = try Row.fetchAll(db, sql: "SELECT seq, event FROM change_event")
        for row in events {
            var event = try ChangeEvent(serializedBytes: Array(row["event"] as Data))
            switch event.subject {
            case .customer(let customer)?:
                event.subject = .customer(Self.published(customer))
            case .license(var license)? where !license.namedUsers.isEmpty:
                license.namedUsers = licenses.contains(license.id) ? try Self.pseudonyms(license: license.id, in: db) : []
                event.subject = .license(license)
            default:
                continue
            }
            try db.execute(sql: "UPDATE change_event SET event = ? WHERE seq = ?", arguments: [Data(event.serializedBytes()), row["seq"] as Int64])
        }
        try ChangeFeed.beginEpoch(in: db)
    }

    // MARK: Named users

    private func userHash(_ user: String, key: SymmetricKey) -> String {
        Hex.encode(Array(HMAC<SHA256>.authenticationCode(for: Array("user\u{0}\(user)".utf8), using: key)).prefix(16))
    }

    /// The named users of a license, in the order they were assigned; none once the customer is erased.
    func namedUsers(license: String, customer: String, in db: Database) throws -> [String] {
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT user FROM license_user WHERE license_id = ? ORDER BY assigned_at, user_hash"), arguments: [license])
        guard !rows.isEmpty, let key = try dataKey(customer, create: false, in: db) else { return [] }
        return try rows.map { row in
            let box = try AES.GCM.SealedBox(combined: row["user"] as Data)
            return String(decoding: try AES.GCM.open(box, using: key, authenticating: Array("user\u{0}\(license)".utf8)), as: UTF8.self)
        }
    }

    /// Adds a named user; false when the user is named already.
    func assign(_ user: String, license: String, customer: String, at now: Int64, in db: Database) throws -> Bool {
        let key = try dataKey(customer, create: true, in: db)!
        let hash = userHash(user, key: key)
        let sealed = try AES.GCM.seal(Array(user.utf8), using: key, authenticating: Array("user\u{0}\(license)".utf8)).combined!
        try db.execute(
            sql: "INSERT OR IGNORE INTO license_user (license_id, user_hash, user, pseudonym, assigned_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [license, hash, sealed, keyHashSecret.namedUserPseudonym(license: license, user: user), now])
        return db.changesCount > 0
    }

    /// Removes a named user; false when the user was not named.
    func unassign(_ user: String, license: String, customer: String, in db: Database) throws -> Bool {
        guard let key = try dataKey(customer, create: false, in: db) else { return false }
        try db.execute(sql: "DELETE FROM license_user WHERE license_id = ? AND user_hash = ?", arguments: [license, userHash(user, key: key)])
        return db.changesCount > 0
    }

    /// What the change feed carries for a license's named users.
    static func pseudonyms(license: String, in db: Database) throws -> [String] {
        try String.fetchAll(
            db.cachedStatement(sql: "SELECT pseudonym FROM license_user WHERE license_id = ? ORDER BY assigned_at, user_hash"), arguments: [license])
    }
}
