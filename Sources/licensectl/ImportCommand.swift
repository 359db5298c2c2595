import ArgumentParser
import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

/// Brings customers and licenses over from another licensing system, with the keys their
/// holders already have (hashed by issuance on the way in, never stored).
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import customers and licenses (with their existing keys) from JSON lines or CSV.",
        discussion: """
            JSON lines, one object per line:
              {"type":"customer","ref":"C-1","name":"Acme","email":"it@acme.test"}
              {"type":"license","customer":"C-1","policy":"Standard","key":"ABCD-1234-EFGH-5678","expires":"2027-12-31",
               "machines":[{"fingerprint":"...","name":"Build box"}]}
            CSV, one license per row, with a header:
              customer_ref,customer_name,customer_email,policy,product,key,expires,machines
            (machines: fingerprint[:name] separated by ';'). A policy is named by its name, and by
            the product's code too when names repeat across products. A customer's ref is kept as
            its CRM id, which makes a second run find it. Re-running a file creates nothing twice:
            a key already imported is skipped. --dry-run checks every row and says what would be
            created. Exit status: 0 every row taken, 1 some rows refused (each is listed), 2 the
            file could not be read.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The file (.jsonl or .csv).") var file: String
    @Option(help: "jsonl or csv (default: from the file's extension).") var format: String?
    @Flag(help: "Check every row and report what would be created; change nothing.") var dryRun = false

    struct CustomerRow {
        let ref: String
        let name: String
        let email: String
        let crmID: String
    }

    struct MachineRow {
        let fingerprint: String
        let name: String
    }

    struct LicenseRow {
        let line: Int
        let customer: String
        let policy: String
        let product: String
        let key: String
        let expires: String
        let machines: [MachineRow]
    }

    struct Problem: Error {
        let line: Int
        let message: String
    }

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
            Output.error("cannot read \(file)")
            throw ExitCode(2)
        }
        let kind = format ?? (file.hasSuffix(".csv") ? "csv" : "jsonl")
        guard kind == "csv" || kind == "jsonl" else { throw ValidationError("--format must be jsonl or csv") }
        var problems: [Problem] = []
        let (customers, licenses) = kind == "csv" ? Self.parseCSV(text, problems: &problems) : Self.parseJSONLines(text, problems: &problems)
        let client = try global.client()
        defer { Task { await client.close() } }
        let timeout = Duration.seconds(global.timeout)
        func call<Request, Response>(_ method: WireMethod<Request, Response>, _ request: Request, idempotency: String? = nil) async throws -> Response {
            var metadata = RPCMetadata()
            metadata[RPCMetadata.idempotencyKey] = idempotency
            return try await client.call(method, request, metadata: metadata, timeout: timeout)
        }
        do {
            // The catalogue, to name policies.
            let products = try await call(IssuanceMethods.listProducts, ListProductsRequest(page: PageRequest(pageSize: 1000))).products
            let policies = try await call(IssuanceMethods.listPolicies, ListPoliciesRequest(page: PageRequest(pageSize: 1000))).policies
            let codes = Dictionary(products.map { ($0.id, $0.code) }, uniquingKeysWith: { a, _ in a })
            func policy(_ row: LicenseRow) throws(Problem) -> Policy {
                let named = policies.filter { $0.name.caseInsensitiveCompare(row.policy) == .orderedSame && (row.product.isEmpty || codes[$0.productId] == row.product) }
                guard !named.isEmpty else { throw Problem(line: row.line, message: "no policy is named \"\(row.policy)\"\(row.product.isEmpty ? "" : " in product \(row.product)")") }
                guard named.count == 1 else { throw Problem(line: row.line, message: "several products have a policy \"\(row.policy)\": name the product's code (product column)") }
                return named[0]
            }
            var customerIDs: [String: String] = [:]
            var created = (customers: 0, licenses: 0, machines: 0)
            var skipped = 0
            let known = Dictionary(customers.map { ($0.ref, $0) }, uniquingKeysWith: { a, _ in a })
            // Customers: found by their ref (kept as CRM id) or created.
            for customer in customers {
                let existing = try await call(IssuanceMethods.listCustomers, ListCustomersRequest(crmId: customer.crmID)).customers.first
                if let existing {
                    customerIDs[customer.ref] = existing.id
                } else if dryRun {
                    customerIDs[customer.ref] = "(new)"
                    created.customers += 1
                } else {
                    let made = try await call(
                        IssuanceMethods.createCustomer, CreateCustomerRequest(name: customer.name, email: customer.email, crmId: customer.crmID),
                        idempotency: "import-customer:\(customer.crmID)")
                    customerIDs[customer.ref] = made.id
                    created.customers += 1
                }
            }
            for row in licenses {
                do throws(Problem) {
                    let chosen = try policy(row)
                    guard let customer = customerIDs[row.customer] else {
                        throw Problem(line: row.line, message: known[row.customer] == nil ? "customer \(row.customer) is not in the file" : "customer \(row.customer) could not be created")
                    }
                    var expires: Int64 = 0
                    if !row.expires.isEmpty, row.expires != "0" {
                        guard let parsed = try? parseTime(row.expires) else { throw Problem(line: row.line, message: "expires \"\(row.expires)\" is not a date (2027-12-31) or Unix seconds") }
                        expires = parsed
                    }
                    do {
                        _ = try ImportedKey(parsing: row.key)
                    } catch {
                        throw Problem(line: row.line, message: "key: \(error)")
                    }
                    let existing = try? await call(IssuanceMethods.getLicense, GetLicenseRequest(licenseKey: row.key))
                    if existing != nil {
                        skipped += 1
                    } else if dryRun {
                        if expires != 0, expires <= Int64(Date().timeIntervalSince1970) {
                            throw Problem(line: row.line, message: "the license ended on \(Output.time(expires)); only licenses still running are imported")
                        }
                        created.licenses += 1
                        created.machines += row.machines.count
                        continue
                    } else {
                        do {
                            _ = try await call(
                                IssuanceMethods.issueLicense,
                                IssueLicenseRequest(policyId: chosen.id, customerId: customer, overrides: LicenseOverrides(expiresAt: expires), importedKey: row.key))
                            created.licenses += 1
                        } catch let error as RPCError where error.code == .alreadyExists && error.message.contains("already has this key") {
                            skipped += 1
                        } catch let error as RPCError {
                            throw Problem(line: row.line, message: FlagNames.speak(error.message))
                        } catch {
                            throw Problem(line: row.line, message: "\(error)")
                        }
                    }
                    if dryRun { continue }
                    for machine in row.machines {
                        let answer = try? await call(ValidationMethods.activate, ActivateRequest(licenseKey: row.key, fingerprint: machine.fingerprint, machineName: machine.name))
                        if answer?.reason == .valid { created.machines += 1 } else {
                            problems.append(Problem(line: row.line, message: "machine \(machine.name.isEmpty ? machine.fingerprint.prefix(12) : Substring(machine.name)) not activated: \(answer?.detail ?? "no answer")"))
                        }
                    }
                } catch {
                    problems.append(error)
                }
            }
            let verb = dryRun ? "would create" : "created"
            print("\(verb) \(created.customers) customers, \(created.licenses) licenses, \(created.machines) machine activations; \(skipped) licenses already imported")
            for problem in problems.sorted(by: { $0.line < $1.line }) { print("line \(problem.line): \(problem.message)") }
            if !problems.isEmpty { throw ExitCode(1) }
        } catch let error as RPCError {
            Output.error("\(error.code): \(FlagNames.speak(error.message))")
            throw ExitCode(2)
        }
    }

    static func parseJSONLines(_ text: String, problems: inout [Problem]) -> ([CustomerRow], [LicenseRow]) {
        var customers: [CustomerRow] = []
        var licenses: [LicenseRow] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                problems.append(Problem(line: index + 1, message: "not a JSON object"))
                continue
            }
            func field(_ name: String) -> String { (object[name] as? String) ?? (object[name] as? NSNumber)?.stringValue ?? "" }
            switch field("type") {
            case "customer":
                guard !field("ref").isEmpty, !field("name").isEmpty else {
                    problems.append(Problem(line: index + 1, message: "a customer needs ref and name"))
                    continue
                }
                customers.append(CustomerRow(ref: field("ref"), name: field("name"), email: field("email"), crmID: field("crm_id").isEmpty ? field("ref") : field("crm_id")))
            case "license":
                let machines = ((object["machines"] as? [[String: Any]]) ?? []).map { MachineRow(fingerprint: ($0["fingerprint"] as? String) ?? "", name: ($0["name"] as? String) ?? "") }
                licenses.append(LicenseRow(line: index + 1, customer: field("customer"), policy: field("policy"), product: field("product"), key: field("key"), expires: field("expires"), machines: machines))
            default:
                problems.append(Problem(line: index + 1, message: "type must be \"customer\" or \"license\""))
            }
        }
        return (customers, licenses)
    }

    static func parseCSV(_ text: String, problems: inout [Problem]) -> ([CustomerRow], [LicenseRow]) {
        let rows = CSV.rows(text)
        guard let header = rows.first?.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) else { return ([], []) }
        let required = ["customer_ref", "customer_name", "policy", "key"]
        for column in required where !header.contains(column) {
            problems.append(Problem(line: 1, message: "the header has no \(column) column (columns: customer_ref,customer_name,customer_email,policy,product,key,expires,machines)"))
        }
        guard problems.isEmpty else { return ([], []) }
        var customers: [CustomerRow] = []
        var seen = Set<String>()
        var licenses: [LicenseRow] = []
        for (index, row) in rows.dropFirst().enumerated() where !(row.count == 1 && row[0].isEmpty) {
            func field(_ name: String) -> String {
                guard let column = header.firstIndex(of: name), column < row.count else { return "" }
                return row[column].trimmingCharacters(in: .whitespaces)
            }
            let ref = field("customer_ref")
            if !ref.isEmpty, !seen.contains(ref) {
                seen.insert(ref)
                customers.append(CustomerRow(ref: ref, name: field("customer_name").isEmpty ? ref : field("customer_name"), email: field("customer_email"), crmID: ref))
            }
            let machines = field("machines").split(separator: ";").map { entry -> MachineRow in
                let parts = entry.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                return MachineRow(fingerprint: parts[0], name: parts.count > 1 ? parts[1] : "")
            }
            licenses.append(LicenseRow(line: index + 2, customer: ref, policy: field("policy"), product: field("product"), key: field("key"), expires: field("expires"), machines: machines))
        }
        return (customers, licenses)
    }
}

/// RFC 4180 fields: quoted fields may hold commas, quotes ("") and line breaks.
enum CSV {
    static func rows(_ text: String) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field = ""
        var quoted = false
        var iterator = text.makeIterator()
        var pending: Character?
        while let character = pending ?? iterator.next() {
            pending = nil
            if quoted {
                if character == "\"" {
                    if let next = iterator.next() {
                        if next == "\"" { field.append("\"") } else { quoted = false; pending = next }
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(character)
                }
                continue
            }
            switch character {
            case "\"": quoted = true
            case ",": row.append(field); field = ""
            case "\n", "\r\n":
                row.append(field); field = ""
                rows.append(row); row = []
            case "\r": break
            default: field.append(character)
            }
        }
        if !field.isEmpty || !row.isEmpty { row.append(field); rows.append(row) }
        return rows
    }
}
