import GRDB
import LicensingWire

// The rows of issuance.sqlite as GRDB records, apart from the contract messages: a column's
// storage (comma lists, enum numbers, the key hash) changes here without touching the wire,
// and every read of a tenant's table goes through `owned(by:)`.

/// A record of a table whose rows belong to tenants.
protocol TenantOwned: TableRecord {}

extension TenantOwned where Self: FetchableRecord {
    /// Only the tenant's rows: another tenant's row is simply not there.
    static func owned(by tenant: String) -> QueryInterfaceRequest<Self> { filter(Column("tenant_id") == tenant) }
}

extension QueryInterfaceRequest where RowDecoder: TenantOwned {
    /// Narrows a request to the tenant's rows.
    func owned(by tenant: String) -> Self { filter(Column("tenant_id") == tenant) }
}

extension QueryInterfaceRequest {
    /// Keyset paging in id order (see ``Page``).
    func page(_ page: Page) -> Self { filter(Column("id") > page.after).order(Column("id")).limit(page.size) }
}

/// Rows stored with snake-case columns, as the schema names them.
protocol IssuanceRecord: Codable, FetchableRecord, PersistableRecord, Identifiable where ID == String {}

extension IssuanceRecord {
    static var databaseColumnDecodingStrategy: DatabaseColumnDecodingStrategy { .convertFromSnakeCase }
    static var databaseColumnEncodingStrategy: DatabaseColumnEncodingStrategy { .convertToSnakeCase }
}

/// Lists of names (features, regions) are stored comma-separated; names are checked
/// to contain no commas before they get here.
enum NameList {
    static func encode(_ names: [String]) -> String { names.joined(separator: ",") }
    static func decode(_ text: String) -> [String] { text.isEmpty ? [] : text.split(separator: ",").map(String.init) }
}

struct ProductRecord: IssuanceRecord, TenantOwned {
    static let databaseTableName = "product"
    var id: String
    var tenantId: String
    var name: String
    var code: String
    var description: String
    var createdAt: Int64

    init(_ product: Product) {
        (id, tenantId, name, code, description, createdAt) =
            (product.id, product.tenantId, product.name, product.code, product.description, product.createdAt)
    }

    var message: Product {
        Product(id: id, name: name, code: code, description: description, createdAt: createdAt, tenantId: tenantId)
    }
}

struct PolicyRecord: IssuanceRecord, TenantOwned {
    static let databaseTableName = "policy"
    var id: String
    var tenantId: String
    var productId: String
    var name: String
    var licenseType: Int32
    var durationSeconds: Int64
    var graceSeconds: Int64
    var maxMachines: UInt32
    var maxUsers: UInt32
    var maxSeats: UInt32
    var features: String
    var allowedRegions: String
    var deniedRegions: String
    var checkInIntervalSeconds: Int64
    var overagePermille: UInt32
    var createdAt: Int64

    init(_ policy: Policy) {
        id = policy.id
        tenantId = policy.tenantId
        productId = policy.productId
        name = policy.name
        licenseType = policy.licenseType.rawValue
        durationSeconds = policy.durationSeconds
        graceSeconds = policy.graceSeconds
        maxMachines = policy.maxMachines
        maxUsers = policy.maxUsers
        maxSeats = policy.maxSeats
        features = NameList.encode(policy.features)
        allowedRegions = NameList.encode(policy.allowedRegions)
        deniedRegions = NameList.encode(policy.deniedRegions)
        checkInIntervalSeconds = policy.checkInIntervalSeconds
        overagePermille = policy.overagePermille
        createdAt = policy.createdAt
    }

    var message: Policy {
        Policy(
            id: id, productId: productId, name: name, licenseType: LicenseType(rawValue: licenseType),
            durationSeconds: durationSeconds, graceSeconds: graceSeconds,
            maxMachines: maxMachines, maxUsers: maxUsers, maxSeats: maxSeats,
            features: NameList.decode(features), allowedRegions: NameList.decode(allowedRegions),
            deniedRegions: NameList.decode(deniedRegions), checkInIntervalSeconds: checkInIntervalSeconds,
            overagePermille: overagePermille, createdAt: createdAt, tenantId: tenantId)
    }
}

/// A license row with what only issuance keeps: the key's hash (never its text).
struct LicenseRecord: IssuanceRecord, TenantOwned {
    static let databaseTableName = "license"
    var id: String
    var tenantId: String
    var productId: String
    var policyId: String
    var customerId: String
    var departmentId: String
    var licenseType: Int32
    var state: Int32
    var stateReason: String
    var keyHash: String
    var keyPrefix: String
    var issuedAt: Int64
    var startsAt: Int64
    var expiresAt: Int64
    var graceSeconds: Int64
    var maxMachines: UInt32
    var maxUsers: UInt32
    var maxSeats: UInt32
    var features: String
    var allowedRegions: String
    var deniedRegions: String
    var overagePermille: UInt32
    var checkInIntervalSeconds: Int64
    var updatedAt: Int64

    init(_ license: License, keyHash: String) {
        id = license.id
        tenantId = license.tenantId
        productId = license.productId
        policyId = license.policyId
        customerId = license.customerId
        departmentId = license.departmentId
        licenseType = license.licenseType.rawValue
        state = license.state.rawValue
        stateReason = license.stateReason
        self.keyHash = keyHash
        keyPrefix = license.keyPrefix
        issuedAt = license.issuedAt
        startsAt = license.startsAt
        expiresAt = license.expiresAt
        graceSeconds = license.graceSeconds
        maxMachines = license.maxMachines
        maxUsers = license.maxUsers
        maxSeats = license.maxSeats
        features = NameList.encode(license.features)
        allowedRegions = NameList.encode(license.allowedRegions)
        deniedRegions = NameList.encode(license.deniedRegions)
        overagePermille = license.overagePermille
        checkInIntervalSeconds = license.checkInIntervalSeconds
        updatedAt = license.updatedAt
    }

    /// The license as the contract carries it (named users are added from the vault).
    var message: License {
        License(
            id: id, productId: productId, policyId: policyId, customerId: customerId, departmentId: departmentId,
            licenseType: LicenseType(rawValue: licenseType), state: LicenseState(rawValue: state),
            keyPrefix: keyPrefix, issuedAt: issuedAt, startsAt: startsAt, expiresAt: expiresAt, graceSeconds: graceSeconds,
            maxMachines: maxMachines, maxUsers: maxUsers, maxSeats: maxSeats,
            features: NameList.decode(features), allowedRegions: NameList.decode(allowedRegions),
            deniedRegions: NameList.decode(deniedRegions), overagePermille: overagePermille,
            checkInIntervalSeconds: checkInIntervalSeconds, tenantId: tenantId, updatedAt: updatedAt, stateReason: stateReason)
    }
}

/// A department belongs to a tenant through its customer.
struct DepartmentRecord: IssuanceRecord {
    static let databaseTableName = "department"
    var id: String
    var customerId: String
    var name: String
    var costCenter: String
    var maxSeats: UInt32
    var maxMachines: UInt32

    init(_ department: Department) {
        (id, customerId, name, costCenter, maxSeats, maxMachines) =
            (department.id, department.customerId, department.name, department.costCenter, department.maxSeats, department.maxMachines)
    }

    var message: Department {
        Department(id: id, customerId: customerId, name: name, costCenter: costCenter, maxSeats: maxSeats, maxMachines: maxMachines)
    }

    /// The tenant's departments: those of its customers.
    static func owned(by tenant: String) -> QueryInterfaceRequest<DepartmentRecord> {
        filter(sql: "customer_id IN (SELECT id FROM customer WHERE tenant_id = ?)", arguments: [tenant])
    }
}

struct SubscriptionRecord: IssuanceRecord, TenantOwned {
    static let databaseTableName = "subscription"
    var id: String
    var licenseId: String
    var tenantId: String
    var billingRef: String
    var periodStart: Int64
    var periodEnd: Int64
    var status: Int32
    var autoRenew: Bool
    var amountMinor: Int64
    var currency: String

    init(_ subscription: Subscription, tenant: String) {
        id = subscription.id
        licenseId = subscription.licenseId
        tenantId = tenant
        billingRef = subscription.billingRef
        periodStart = subscription.periodStart
        periodEnd = subscription.periodEnd
        status = subscription.status.rawValue
        autoRenew = subscription.autoRenew
        amountMinor = subscription.amountMinor
        currency = subscription.currency
    }

    var message: Subscription {
        Subscription(
            id: id, licenseId: licenseId, billingRef: billingRef, periodStart: periodStart, periodEnd: periodEnd,
            status: SubscriptionStatus(rawValue: status), autoRenew: autoRenew, amountMinor: amountMinor, currency: currency)
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
