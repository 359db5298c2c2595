import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire

/// What a report covers: the caller's tenant (none for a local caller: every tenant), a
/// product, a customer, a period, a page. As SQL over `r_license l`: parameters ?1 to ?3.
struct ReportScope: Sendable {
    let tenant: String?
    let product: String
    let customer: String
    let from: Int64
    let to: Int64
    let pageSize: Int
    let pageToken: String

    static let licenses = "(?1 IS NULL OR l.tenant_id = ?1) AND (?2 = '' OR l.product_id = ?2) AND (?3 = '' OR l.customer_id = ?3)"

    init(_ request: ReportRequest, _ call: ServerCall, now: Int64) throws {
        for (value, name) in [(request.productId, "product_id"), (request.customerId, "customer_id")] where value.count > 64 {
            throw RPCError.invalidArgument("\(name) is longer than 64 characters")
        }
        tenant = call.metadata[RPCMetadata.tenant]
        product = request.productId
        customer = request.customerId
        to = request.to == 0 ? now + 1 : request.to
        from = request.from == 0 ? to - 30 * 86400 : request.from
        guard from < to else {
            throw RPCError.invalidArgument("from (\(ISODate.format(from))) must be before to (\(ISODate.format(to)))")
        }
        let size = Int(request.page?.pageSize ?? 0)
        pageSize = size == 0 ? 100 : min(size, 1000)
        pageToken = request.page?.pageToken ?? ""
        guard pageToken.count <= 200 else { throw RPCError.invalidArgument("page_token is not one this service gave") }
    }

    /// The scope's arguments ?1 to ?3, then `more` as ?4 onwards.
    func arguments(_ more: [any DatabaseValueConvertible & Sendable] = []) -> StatementArguments {
        StatementArguments([tenant, product, customer] as [(any DatabaseValueConvertible)?] + more.map { $0 as (any DatabaseValueConvertible)? })
    }

    /// The period in whole UTC days, [first day, day after the last).
    var days: (Int64, Int64) { (ReadModel.day(from), ReadModel.day(to - 1) + 86400) }
}

/// A license's limit with its overage allowance, in SQL over `l` (0 = no limit).
func allowanceSQL(_ column: String) -> String {
    "(CASE WHEN l.\(column) = 0 THEN 0 ELSE l.\(column) * MAX(MIN(l.overage_permille, 1000000), 1000) / 1000 END)"
}

/// Customer names, asked from issuance when a report is produced (reporting stores none),
/// in the customer's tenant. An erased customer reads as issuance says, "(erased)"; one
/// issuance cannot be asked about now is left blank rather than holding the report.
final class CustomerNames: @unchecked Sendable {
    // @unchecked: used by one report at a time, from one task.
    private let issuance: RPCClient
    private let database: DatabasePool
    private var names: [String: String] = [:]
    private var reachable = true

    init(issuance: RPCClient, database: DatabasePool) {
        self.issuance = issuance
        self.database = database
    }

    func name(_ id: String) async -> String {
        if let known = names[id] { return known }
        guard reachable, !id.isEmpty else { return "" }
        do {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.tenant] = try await database.read { db in
                try String.fetchOne(db, sql: "SELECT tenant_id FROM r_license WHERE customer_id = ? LIMIT 1", arguments: [id])
            }
            let customer = try await issuance.call(IssuanceMethods.getCustomer, GetByIdRequest(id: id), metadata: metadata, timeout: .seconds(2))
            names[id] = customer.name
            return customer.name
        } catch let error as RPCError where error.code == .notFound {
            names[id] = ""
            return ""
        } catch {
            reachable = false
            return ""
        }
    }
}
