import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire
import Logging
import ServiceLifecycle

/// license-issuance: the system of record for products, policies, customers and licenses,
/// and the change feed the other services learn from.
public final class IssuanceService: Sendable {
    let database: DatabasePool
    let clock: any LicenseClock
    let keyHashSecret: KeyHashSecret
    let logger: Logger

    public init(database: DatabasePool, keyHashSecret: KeyHashSecret, clock: any LicenseClock = SystemLicenseClock(), logger: Logger) {
        self.database = database
        self.keyHashSecret = keyHashSecret
        self.clock = clock
        self.logger = logger
    }

    /// Opens `issuance.sqlite` with `synchronous=FULL`: nothing acknowledged is lost on power failure.
    public static func openDatabase(path: String) throws -> DatabasePool {
        try ServiceDatabase.open(path: path, durability: .full, migrator: IssuanceSchema.migrator)
    }

    /// Everything the executable runs, from its environment.
    public static func services(_ environment: ServiceEnvironment) throws -> [any Service] {
        let service = IssuanceService(
            database: try openDatabase(path: environment.databasePath),
            keyHashSecret: try Secrets.keyHashSecret(settings: environment.settings, developmentMode: environment.developmentMode),
            logger: environment.logger)
        return [RPCServer(router: service.router(), configuration: try environment.serverConfiguration, logger: environment.logger)]
    }

    public func router() -> RPCRouter {
        var router = RPCRouter()
        HealthReporter(service: "issuance").register(in: &router)
        router.register(IssuanceMethods.createProduct) { try await self.createProduct($0, $1) }
        router.register(IssuanceMethods.getProduct) { try await self.getProduct($0, $1) }
        router.register(IssuanceMethods.listProducts) { try await self.listProducts($0, $1) }
        router.register(IssuanceMethods.createPolicy) { try await self.createPolicy($0, $1) }
        router.register(IssuanceMethods.getPolicy) { try await self.getPolicy($0, $1) }
        router.register(IssuanceMethods.listPolicies) { try await self.listPolicies($0, $1) }
        router.register(IssuanceMethods.createCustomer) { try await self.createCustomer($0, $1) }
        router.register(IssuanceMethods.getCustomer) { try await self.getCustomer($0, $1) }
        router.register(IssuanceMethods.listCustomers) { try await self.listCustomers($0, $1) }
        router.register(IssuanceMethods.issueLicense) { try await self.issueLicense($0, $1) }
        router.register(IssuanceMethods.getLicense) { try await self.getLicense($0, $1) }
        router.register(IssuanceMethods.listLicenses) { try await self.listLicenses($0, $1) }
        router.register(IssuanceMethods.suspendLicense) { try await self.transition($0, $1, to: .suspended) }
        router.register(IssuanceMethods.reinstateLicense) { try await self.transition($0, $1, to: .active) }
        router.register(IssuanceMethods.revokeLicense) { try await self.transition($0, $1, to: .revoked) }
        router.register(IssuanceMethods.changes) { try await self.changes($0, $1) }
        router.registerStream(IssuanceMethods.watchChanges) { try await self.watchChanges($0, $1, $2) }
        return router
    }

    /// The tenant a call acts for, as the gateway stated it; direct local callers act for "default".
    func tenant(_ call: ServerCall) -> String {
        call.metadata[RPCMetadata.tenant] ?? "default"
    }
}

// MARK: Catalogue and customers

extension IssuanceService {
    func createProduct(_ request: CreateProductRequest, _ call: ServerCall) async throws -> Product {
        try Check.nonEmpty(request.name, "name")
        try Check.length(request.name, "name")
        try Check.productCode(request.code)
        try Check.length(request.description, "description", max: 2000)
        let product = Product(
            id: EntityID.make("prod"), name: request.name, code: request.code, description: request.description,
            createdAt: clock.now, tenantId: tenant(call))
        try await write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM product WHERE tenant_id = ? AND code = ?", arguments: [product.tenantId, product.code]) == true {
                throw RPCError.alreadyExists("a product with code \(product.code) already exists")
            }
            try db.execute(
                sql: "INSERT INTO product (id, tenant_id, name, code, description, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [product.id, product.tenantId, product.name, product.code, product.description, product.createdAt])
            try ChangeFeed.append(ChangeEvent(kind: .product, action: "product.created", product: product), at: product.createdAt, in: db)
        }
        return product
    }

    func getProduct(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Product {
        let found = try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM product WHERE id = ? AND tenant_id = ?", arguments: [request.id, self.tenant(call)]).map(Product.init(row:))
        }
        guard let found else { throw RPCError.notFound("no product \(request.id)") }
        return found
    }

    func listProducts(_ request: ListProductsRequest, _ call: ServerCall) async throws -> ListProductsResponse {
        let page = Page(request.page)
        let products = try await database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM product WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
                arguments: [self.tenant(call), page.after, page.size]
            ).map(Product.init(row:))
        }
        return ListProductsResponse(products: products, nextPageToken: page.nextToken(products.map(\.id)))
    }

    func createPolicy(_ request: CreatePolicyRequest, _ call: ServerCall) async throws -> Policy {
        guard var policy = request.policy else { throw RPCError.invalidArgument("policy is required") }
        try Check.nonEmpty(policy.productId, "policy.product_id")
        try Check.nonEmpty(policy.name, "policy.name")
        try Check.length(policy.name, "policy.name")
        guard LicenseType.allKnown.contains(policy.licenseType), policy.licenseType != .unspecified else {
            throw RPCError.invalidArgument("policy.license_type must be PER_USER, PER_DEVICE, SUBSCRIPTION or ENTERPRISE")
        }
        try Check.nonNegative(policy.durationSeconds, "policy.duration_seconds")
        try Check.nonNegative(policy.graceSeconds, "policy.grace_seconds")
        try Check.nonNegative(policy.checkInIntervalSeconds, "policy.check_in_interval_seconds")
        if policy.licenseType == .subscription, policy.durationSeconds == 0 {
            throw RPCError.invalidArgument("a subscription policy needs duration_seconds (the billing period)")
        }
        try Check.features(policy.features)
        try Check.regions(policy.allowedRegions, "policy.allowed_regions")
        try Check.regions(policy.deniedRegions, "policy.denied_regions")
        if policy.overagePermille == 0 { policy.overagePermille = 1000 }
        guard (1000...10000).contains(policy.overagePermille) else {
            throw RPCError.invalidArgument("policy.overage_permille must be between 1000 (no overage) and 10000 (10x)")
        }
        policy.id = EntityID.make("pol")
        policy.createdAt = clock.now
        policy.tenantId = tenant(call)
        let created = policy
        try await write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM product WHERE id = ? AND tenant_id = ?", arguments: [created.productId, created.tenantId]) == true else {
                throw RPCError.notFound("no product \(created.productId)")
            }
            try db.execute(
                sql: """
                    INSERT INTO policy (id, tenant_id, product_id, name, license_type, duration_seconds, grace_seconds,
                        max_machines, max_users, max_seats, features, allowed_regions, denied_regions,
                        check_in_interval_seconds, overage_permille, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    created.id, created.tenantId, created.productId, created.name, created.licenseType.rawValue,
                    created.durationSeconds, created.graceSeconds, created.maxMachines, created.maxUsers, created.maxSeats,
                    NameList.encode(created.features), NameList.encode(created.allowedRegions), NameList.encode(created.deniedRegions),
                    created.checkInIntervalSeconds, created.overagePermille, created.createdAt,
                ])
            try ChangeFeed.append(ChangeEvent(kind: .policy, action: "policy.created", policy: created), at: created.createdAt, in: db)
        }
        return created
    }

    func getPolicy(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Policy {
        let found = try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM policy WHERE id = ? AND tenant_id = ?", arguments: [request.id, self.tenant(call)]).map(Policy.init(row:))
        }
        guard let found else { throw RPCError.notFound("no policy \(request.id)") }
        return found
    }

    func listPolicies(_ request: ListPoliciesRequest, _ call: ServerCall) async throws -> ListPoliciesResponse {
        let page = Page(request.page)
        let policies = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM policy WHERE tenant_id = ? AND (? = '' OR product_id = ?) AND id > ? ORDER BY id LIMIT ?",
                arguments: [self.tenant(call), request.productId, request.productId, page.after, page.size]
            ).map(Policy.init(row:))
        }
        return ListPoliciesResponse(policies: policies, nextPageToken: page.nextToken(policies.map(\.id)))
    }

    func createCustomer(_ request: CreateCustomerRequest, _ call: ServerCall) async throws -> Customer {
        try Check.nonEmpty(request.name, "name")
        try Check.length(request.name, "name")
        try Check.length(request.email, "email")
        try Check.length(request.crmId, "crm_id")
        if !request.email.isEmpty, !request.email.contains("@") {
            throw RPCError.invalidArgument("email \"\(request.email)\" is not an e-mail address")
        }
        let customer = Customer(
            id: EntityID.make("cus"), name: request.name, email: request.email, crmId: request.crmId,
            enterprise: request.enterprise, createdAt: clock.now, tenantId: tenant(call))
        try await write { db in
            try db.execute(
                sql: "INSERT INTO customer (id, tenant_id, name, email, crm_id, enterprise, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [customer.id, customer.tenantId, customer.name, customer.email, customer.crmId, customer.enterprise, customer.createdAt])
            try ChangeFeed.append(ChangeEvent(kind: .customer, action: "customer.created", customer: customer), at: customer.createdAt, in: db)
        }
        return customer
    }

    func getCustomer(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Customer {
        let found = try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM customer WHERE id = ? AND tenant_id = ?", arguments: [request.id, self.tenant(call)]).map(Customer.init(row:))
        }
        guard let found else { throw RPCError.notFound("no customer \(request.id)") }
        return found
    }

    func listCustomers(_ request: ListCustomersRequest, _ call: ServerCall) async throws -> ListCustomersResponse {
        let page = Page(request.page)
        let customers = try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM customer WHERE tenant_id = ? AND (? = '' OR crm_id = ?) AND id > ? ORDER BY id LIMIT ?",
                arguments: [self.tenant(call), request.crmId, request.crmId, page.after, page.size]
            ).map(Customer.init(row:))
        }
        return ListCustomersResponse(customers: customers, nextPageToken: page.nextToken(customers.map(\.id)))
    }

    /// Runs a write transaction, turning constraint violations into a clear status.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await database.write(body)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw RPCError.failedPrecondition("the change breaks a rule of the stored data: \(error.message ?? "constraint failed")")
        }
    }
}
