import GRDB
import LicensingWire

// Mapping between rows of issuance.sqlite and contract messages.

/// Lists of names (features, regions) are stored comma-separated; names are checked
/// to contain no commas before they get here.
enum NameList {
    static func encode(_ names: [String]) -> String { names.joined(separator: ",") }
    static func decode(_ text: String) -> [String] { text.isEmpty ? [] : text.split(separator: ",").map(String.init) }
}

extension Product {
    init(row: Row) {
        self.init(
            id: row["id"], name: row["name"], code: row["code"], description: row["description"],
            createdAt: row["created_at"], tenantId: row["tenant_id"])
    }
}

extension Policy {
    init(row: Row) {
        self.init(
            id: row["id"], productId: row["product_id"], name: row["name"],
            licenseType: LicenseType(rawValue: row["license_type"]),
            durationSeconds: row["duration_seconds"], graceSeconds: row["grace_seconds"],
            maxMachines: row["max_machines"], maxUsers: row["max_users"], maxSeats: row["max_seats"],
            features: NameList.decode(row["features"]),
            allowedRegions: NameList.decode(row["allowed_regions"]),
            deniedRegions: NameList.decode(row["denied_regions"]),
            checkInIntervalSeconds: row["check_in_interval_seconds"],
            overagePermille: row["overage_permille"], createdAt: row["created_at"], tenantId: row["tenant_id"])
    }
}

extension License {
    init(row: Row) {
        self.init(
            id: row["id"], productId: row["product_id"], policyId: row["policy_id"],
            customerId: row["customer_id"], departmentId: row["department_id"],
            licenseType: LicenseType(rawValue: row["license_type"]),
            state: LicenseState(rawValue: row["state"]),
            keyPrefix: row["key_prefix"], issuedAt: row["issued_at"], startsAt: row["starts_at"],
            expiresAt: row["expires_at"], graceSeconds: row["grace_seconds"],
            maxMachines: row["max_machines"], maxUsers: row["max_users"], maxSeats: row["max_seats"],
            features: NameList.decode(row["features"]),
            allowedRegions: NameList.decode(row["allowed_regions"]),
            deniedRegions: NameList.decode(row["denied_regions"]),
            overagePermille: row["overage_permille"], checkInIntervalSeconds: row["check_in_interval_seconds"],
            tenantId: row["tenant_id"], updatedAt: row["updated_at"], stateReason: row["state_reason"])
    }
}

/// Keyset paging: rows ordered by id, the token is the last id of the previous page.
struct Page {
    let size: Int
    let after: String

    init(_ request: PageRequest?) {
        let asked = Int(request?.pageSize ?? 0)
        size = asked == 0 ? 100 : min(asked, 1000)
        after = request?.pageToken ?? ""
    }

    /// The next token: the last id when the page is full, else "" (no more).
    func nextToken(_ ids: [String]) -> String {
        ids.count == size ? ids.last ?? "" : ""
    }
}

extension Department {
    init(row: Row) {
        self.init(
            id: row["id"], customerId: row["customer_id"], name: row["name"], costCenter: row["cost_center"],
            maxSeats: row["max_seats"], maxMachines: row["max_machines"])
    }
}

extension Subscription {
    init(row: Row) {
        self.init(
            id: row["id"], licenseId: row["license_id"], billingRef: row["billing_ref"], periodStart: row["period_start"],
            periodEnd: row["period_end"], status: SubscriptionStatus(rawValue: row["status"]), autoRenew: row["auto_renew"],
            amountMinor: row["amount_minor"], currency: row["currency"])
    }
}

/// A table whose rows belong to tenants, read as contract messages: every read is scoped to
/// the caller's tenant, so another tenant's row is simply not there.
struct TenantTable<Message: Sendable>: Sendable {
    let name: String
    let decode: @Sendable (Row) -> Message

    func find(_ id: String, tenant: String, in db: Database) throws -> Message? {
        try Row.fetchOne(db, sql: "SELECT * FROM \(name) WHERE id = ? AND tenant_id = ?", arguments: [id, tenant]).map(decode)
    }

    /// A page in id order; `column = value` narrows it when the value is not empty.
    func page(tenant: String, _ page: Page, where column: String? = nil, is value: String = "", in db: Database) throws -> [Message] {
        let filter = column.map { " AND (? = '' OR \($0) = ?)" } ?? ""
        var arguments: StatementArguments = [tenant]
        if column != nil { arguments += [value, value] }
        arguments += [page.after, page.size]
        return try Row.fetchAll(db, sql: "SELECT * FROM \(name) WHERE tenant_id = ?\(filter) AND id > ? ORDER BY id LIMIT ?", arguments: arguments)
            .map(decode)
    }
}

/// The catalogue's tables.
enum Tables {
    static let products = TenantTable<Product>(name: "product", decode: Product.init(row:))
    static let policies = TenantTable<Policy>(name: "policy", decode: Policy.init(row:))
}
