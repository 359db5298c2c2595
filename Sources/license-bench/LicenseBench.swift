import ArgumentParser
import Foundation
import LicensingRPC
import LicensingWire

@main
struct LicenseBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "license-bench",
        abstract: "Seed a License Manager stack and measure one kind of call.",
        discussion: """
            license-bench seed --endpoint unix:data/run/gateway.sock --api-key KEY --out seed.txt
            license-bench run validate --endpoint unix:data/run/validation.sock --seed seed.txt --connections 32
            """,
        subcommands: [Seed.self, Run.self, Reports.self])
}

/// Where to send calls and as whom.
struct Target: ParsableArguments {
    @Option(help: "Endpoint: the gateway, or a service directly (unix:/path or host:port).")
    var endpoint: String

    @Option(help: "API key (needed through the gateway).")
    var apiKey: String?

    @Option(help: "CA (PEM) of a TLS endpoint.")
    var ca: String?

    func configuration(connections: Int) throws -> RPCClientConfiguration {
        var configuration = RPCClientConfiguration(connections: connections, connectTimeout: .seconds(2))
        if let apiKey { configuration.metadata[RPCMetadata.apiKey] = apiKey }
        if case .tcp = try Endpoint(parsing: endpoint), let ca { configuration.tls = try RPCTLS.client(ca: ca) }
        return configuration
    }

    func client(connections: Int) throws -> RPCClient {
        RPCClient(endpoint: try Endpoint(parsing: endpoint), configuration: try configuration(connections: connections))
    }
}

/// One seeded license: what a product would hold.
struct SeededLicense: Sendable {
    let key: String
    let fingerprint: String
    let licenseID: String
}

enum SeedFile {
    static func write(_ licenses: [SeededLicense], policy: String, customer: String, to path: String) throws {
        var text = "# license-bench seed: policy customer, then key fingerprint license per line\n\(policy) \(customer)\n"
        for license in licenses { text += "\(license.key) \(license.fingerprint) \(license.licenseID)\n" }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func read(_ path: String) throws -> (policy: String, customer: String, licenses: [SeededLicense]) {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        guard let header = lines.first?.split(separator: " "), header.count == 2 else {
            throw ValidationError("\(path) is not a license-bench seed file")
        }
        let licenses = lines.dropFirst().compactMap { line -> SeededLicense? in
            let fields = line.split(separator: " ")
            guard fields.count == 3 else { return nil }
            return SeededLicense(key: String(fields[0]), fingerprint: String(fields[1]), licenseID: String(fields[2]))
        }
        return (String(header[0]), String(header[1]), licenses)
    }
}

/// Runs `count` jobs over `concurrency` workers; prints progress to standard error.
func inParallel(_ count: Int, concurrency: Int, label: String, _ job: @escaping @Sendable (Int) async throws -> Void) async throws {
    let next = Counter()
    let done = Counter()
    let progress = Task {
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(1))
            FileHandle.standardError.write(Data("\r\(label): \(done.value)/\(count)".utf8))
        }
    }
    defer {
        progress.cancel()
        FileHandle.standardError.write(Data("\r\(label): \(done.value)/\(count)\n".utf8))
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                while true {
                    let index = next.increment() - 1
                    guard index < count else { return }
                    try await job(index)
                    _ = done.increment()
                }
            }
        }
        try await group.waitForAll()
    }
}

struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create products, a policy each, licenses and one activated machine per license.")
    @OptionGroup var target: Target
    @Option(help: "Products.") var products: Int = 10
    @Option(help: "Licenses (spread over the products).") var licenses: Int = 100_000
    @Option(help: "Calls in flight while seeding.") var concurrency: Int = 32
    @Option(help: "Seed file to write.") var out: String = "seed.txt"

    func run() async throws {
        let client = try target.client(connections: 4)
        let run = String(UInt32.random(in: 0...UInt32.max), radix: 36).uppercased()
        var policies: [String] = []
        for index in 0..<products {
            let product = try await client.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Bench \(index)", code: "B\(run)-\(index)"))
            let policy = try await client.call(
                IssuanceMethods.createPolicy,
                CreatePolicyRequest(policy: Policy(productId: product.id, name: "Bench", licenseType: .perDevice, durationSeconds: 365 * 86400, features: ["core", "export"])))
            policies.append(policy.id)
        }
        let customer = try await client.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Bench Co")).id
        let policyIDs = policies
        let seeded = SeededStore(count: licenses)
        let started = ContinuousClock.now
        try await inParallel(licenses, concurrency: concurrency, label: "issue+activate") { index in
            let issued = try await client.call(
                IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policyIDs[index % policyIDs.count], customerId: customer))
            let fingerprint = "bench-machine-\(index)"
            let activated = try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: issued.licenseKey, fingerprint: fingerprint))
            guard activated.reason == .valid else { throw ValidationError("activation \(index) answered \(activated.reason): \(activated.detail)") }
            seeded.set(index, SeededLicense(key: issued.licenseKey, fingerprint: fingerprint, licenseID: issued.license?.id ?? ""))
        }
        let elapsed = ContinuousClock.now - started
        try SeedFile.write(seeded.all, policy: policies[0], customer: customer, to: out)
        print("seeded \(licenses) licenses with a machine each over \(products) products in \(elapsed); wrote \(out)")
        await client.close()
    }
}
