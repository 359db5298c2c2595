import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Products, policies, customers and departments.

extension IssuanceService {
    // MARK: Products

    public func createProduct(_ request: CreateProductRequest, _ call: ServerCall) async throws -> Product {
        try Check.nonEmpty(request.name, "name")
        try Check.length(request.name, "name")
        try Check.productCode(request.code)
        try Check.length(request.description, "description", max: 2000)
        return try await mutate(call, action: "product.create", target: \.id) { db, context in
            let product = Product(
                id: EntityID.make("prod"), name: request.name, code: request.code, description: request.description,
                createdAt: context.now, tenantId: context.tenant)
            if try ProductRecord.owned(by: product.tenantId).filter(Column("code") == product.code).fetchCount(db) > 0 {
                throw RPCError.alreadyExists("a product with code \(product.code) already exists")
            }
            try ProductRecord(product).insert(db)
            try ChangeFeed.append(ChangeEvent(action: "product.created", .product(product)), at: context.now, in: db)
            return product
        }
    }

    public func updateProduct(_ request: UpdateProductRequest, _ call: ServerCall) async throws -> Product {
        try Check.nonEmpty(request.id, "id")
        try Check.length(request.name, "name")
        try Check.length(request.description, "description", max: 2000)
        return try await mutate(call, action: "product.update", target: \.id) { db, context in
            guard var record = try ProductRecord.owned(by: context.tenant).filter(id: request.id).fetchOne(db) else {
                throw RPCError.notFound("no product \(request.id)")
            }
            if !request.name.isEmpty { record.name = request.name }
            if !request.description.isEmpty { record.description = request.description }
            try record.update(db)
            let product = record.message
            try ChangeFeed.append(ChangeEvent(action: "product.updated", .product(product)), at: context.now, in: db)
            return product
        }
    }

    public func getProduct(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Product {
        let found = try await database.read { db in
            try ProductRecord.owned(by: self.tenant(call)).filter(id: request.id).fetchOne(db)?.message
        }
        guard let found else { throw RPCError.notFound("no product \(request.id)") }
        return found
    }

    public func listProducts(_ request: ListProductsRequest, _ call: ServerCall) async throws -> ListProductsResponse {
        let page = Page(request.page)
        let products = try await database.read { db in
            try ProductRecord.owned(by: self.tenant(call)).page(page).fetchAll(db).map(\.message)
        }
        return ListProductsResponse(products: products, nextPageToken: page.nextToken(products.map(\.id)))
    }

    // MARK: Policies

    /// Checks a policy template and fills defaults; shared by create and update.
    private func checkedPolicy(_ policy: Policy?) throws -> Policy {
        guard var policy else { throw RPCError.invalidArgument("policy is required") }
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
        return policy
    }

    public func createPolicy(_ request: CreatePolicyRequest, _ call: ServerCall) async throws -> Policy {
        let template = try checkedPolicy(request.policy)
        try Check.nonEmpty(template.productId, "policy.product_id")
        return try await mutate(call, action: "policy.create", target: \.id) { db, context in
            var policy = template
            policy.id = EntityID.make("pol")
            policy.createdAt = context.now
            policy.tenantId = context.tenant
            guard try ProductRecord.owned(by: policy.tenantId).filter(id: policy.productId).fetchCount(db) > 0 else {
                throw RPCError.notFound("no product \(policy.productId)")
            }
            try PolicyRecord(policy).insert(db)
            try ChangeFeed.append(ChangeEvent(action: "policy.created", .policy(policy)), at: context.now, in: db)
            return policy
        }
    }

    /// Replaces a policy's template fields. Licenses already issued keep their terms; the
    /// new template applies to licenses issued from now on.
    public func updatePolicy(_ request: UpdatePolicyRequest, _ call: ServerCall) async throws -> Policy {
        let template = try checkedPolicy(request.policy)
        try Check.nonEmpty(template.id, "policy.id")
        return try await mutate(call, action: "policy.update", target: \.id) { db, context in
            guard let existing = try PolicyRecord.owned(by: context.tenant).filter(id: template.id).fetchOne(db) else {
                throw RPCError.notFound("no policy \(template.id)")
            }
            var policy = template
            policy.productId = existing.productId
            policy.createdAt = existing.createdAt
            policy.tenantId = existing.tenantId
            try PolicyRecord(policy).update(db)
            try ChangeFeed.append(ChangeEvent(action: "policy.updated", .policy(policy)), at: context.now, in: db)
            return policy
        }
    }

    public func getPolicy(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Policy {
        let found = try await database.read { db in
            try PolicyRecord.owned(by: self.tenant(call)).filter(id: request.id).fetchOne(db)?.message
        }
        guard let found else { throw RPCError.notFound("no policy \(request.id)") }
        return found
    }

    public func listPolicies(_ request: ListPoliciesRequest, _ call: ServerCall) async throws -> ListPoliciesResponse {
        let page = Page(request.page)
        let policies = try await database.read { db in
            var policies = PolicyRecord.owned(by: self.tenant(call))
            if !request.productId.isEmpty { policies = policies.filter(Column("product_id") == request.productId) }
            return try policies.page(page).fetchAll(db).map(\.message)
        }
        return ListPoliciesResponse(policies: policies, nextPageToken: page.nextToken(policies.map(\.id)))
    }

    // MARK: Customers and departments

    private func checkContact(name: String, email: String, crmId: String, nameRequired: Bool) throws {
        if nameRequired { try Check.nonEmpty(name, "name") }
        try Check.length(name, "name")
        try Check.length(email, "email")
        try Check.length(crmId, "crm_id")
        if !email.isEmpty, !email.contains("@") {
            throw RPCError.invalidArgument("email \"\(email)\" is not an e-mail address")
        }
    }

    public func createCustomer(_ request: CreateCustomerRequest, _ call: ServerCall) async throws -> Customer {
        try checkContact(name: request.name, email: request.email, crmId: request.crmId, nameRequired: true)
        return try await mutate(call, action: "customer.create", target: \.id) { db, context in
            let customer = Customer(
                id: EntityID.make("cus"), name: request.name, email: request.email, crmId: request.crmId,
                enterprise: request.enterprise, createdAt: context.now, tenantId: context.tenant)
            try self.vault.insert(customer, in: db)
            try ChangeFeed.append(ChangeEvent(action: "customer.created", .customer(CustomerVault.published(customer))), at: context.now, in: db)
            return customer
        }
    }

    public func updateCustomer(_ request: UpdateCustomerRequest, _ call: ServerCall) async throws -> Customer {
        try Check.nonEmpty(request.id, "id")
        try checkContact(name: request.name, email: request.email, crmId: request.crmId, nameRequired: false)
        return try await mutate(call, action: "customer.update", target: \.id) { db, context in
            guard var customer = try self.vault.findCustomer(request.id, tenant: context.tenant, in: db) else {
                throw RPCError.notFound("no customer \(request.id)")
            }
            if !request.name.isEmpty { customer.name = request.name }
            if !request.email.isEmpty { customer.email = request.email }
            if !request.crmId.isEmpty { customer.crmId = request.crmId }
            try self.vault.updateContact(customer, in: db)
            try ChangeFeed.append(ChangeEvent(action: "customer.updated", .customer(CustomerVault.published(customer))), at: context.now, in: db)
            return customer
        }
    }

    public func getCustomer(_ request: GetByIdRequest, _ call: ServerCall) async throws -> Customer {
        let found = try await database.read { db in
            try self.vault.findCustomer(request.id, tenant: self.tenant(call), in: db)
        }
        guard let found else { throw RPCError.notFound("no customer \(request.id)") }
        return found
    }

    public func listCustomers(_ request: ListCustomersRequest, _ call: ServerCall) async throws -> ListCustomersResponse {
        let page = Page(request.page)
        let customers = try await database.read { db in
            try self.vault.customers(tenant: self.tenant(call), page, crmId: request.crmId, in: db)
        }
        return ListCustomersResponse(customers: customers, nextPageToken: page.nextToken(customers.map(\.id)))
    }

    /// An enterprise customer's department (an ERP cost centre) with its own quotas.
    public func createDepartment(_ request: CreateDepartmentRequest, _ call: ServerCall) async throws -> Department {
        try Check.nonEmpty(request.customerId, "customer_id")
        try Check.nonEmpty(request.name, "name")
        try Check.length(request.name, "name")
        try Check.length(request.costCenter, "cost_center")
        return try await mutate(call, action: "department.create", target: \.id) { db, context in
            guard let customer = try self.vault.findCustomer(request.customerId, tenant: context.tenant, in: db) else {
                throw RPCError.notFound("no customer \(request.customerId)")
            }
            guard customer.enterprise else {
                throw RPCError.failedPrecondition("customer \(customer.id) is not an enterprise customer; only those have departments")
            }
            if try DepartmentRecord.filter(Column("customer_id") == customer.id && Column("name") == request.name).fetchCount(db) > 0 {
                throw RPCError.alreadyExists("customer \(customer.id) already has a department named \(request.name)")
            }
            let department = Department(
                id: EntityID.make("dep"), customerId: customer.id, name: request.name, costCenter: request.costCenter,
                maxSeats: request.maxSeats, maxMachines: request.maxMachines)
            try DepartmentRecord(department).insert(db)
            try ChangeFeed.append(ChangeEvent(action: "department.created", .department(department)), at: context.now, in: db)
            return department
        }
    }

    public func updateDepartment(_ request: UpdateDepartmentRequest, _ call: ServerCall) async throws -> Department {
        try Check.length(request.newName, "new_name")
        try Check.length(request.costCenter, "cost_center")
        guard !request.id.isEmpty || (!request.customerId.isEmpty && !request.name.isEmpty) else {
            throw RPCError.invalidArgument("name the department by id, or by customer_id and name")
        }
        return try await mutate(call, action: "department.update", target: \.id) { db, context in
            let named = request.id.isEmpty
                ? DepartmentRecord.owned(by: context.tenant).filter(Column("customer_id") == request.customerId && Column("name") == request.name)
                : DepartmentRecord.owned(by: context.tenant).filter(id: request.id)
            guard let found = try named.fetchOne(db) else {
                throw RPCError.notFound(request.id.isEmpty ? "customer \(request.customerId) has no department named \(request.name)" : "no department \(request.id)")
            }
            var department = found.message
            if !request.newName.isEmpty, request.newName != department.name {
                if try DepartmentRecord.filter(Column("customer_id") == department.customerId && Column("name") == request.newName).fetchCount(db) > 0 {
                    throw RPCError.alreadyExists("customer \(department.customerId) already has a department named \(request.newName)")
                }
                department.name = request.newName
            }
            if !request.costCenter.isEmpty { department.costCenter = request.costCenter }
            if request.updateLimits {
                department.maxSeats = request.maxSeats
                department.maxMachines = request.maxMachines
            }
            try DepartmentRecord(department).update(db)
            try ChangeFeed.append(ChangeEvent(action: "department.updated", .department(department)), at: context.now, in: db)
            return department
        }
    }

    public func listDepartments(_ request: GetByIdRequest, _ call: ServerCall) async throws -> ListDepartmentsResponse {
        let departments = try await database.read { db in
            try DepartmentRecord.owned(by: self.tenant(call)).filter(Column("customer_id") == request.id)
                .order(Column("name")).fetchAll(db).map(\.message)
        }
        return ListDepartmentsResponse(departments: departments)
    }
}
