import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// Backups taken while the stack serves, encrypted; a restore of issuance to the earlier
/// point, after which the services that follow its feed see it went back and follow it
/// again (validation no longer finds the license issued after the backup; a license issued
/// after the restore works everywhere). Altered backups, a wrong key and a running service
/// are refused before anything is written.
@Suite(.serialized) struct BackupRestoreTests {
    @Test func aBackupRestoresAndTheFollowersResyncWithTheRestoredFeed() async throws {
        let stack = try Stack()
        // Webhook endpoints on this machine (a closed port): what would be sent is logged.
        stack.environment["integrations"] = ["LM_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"]
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        _ = try await admin.call(IntegrationsMethods.createWebhookEndpoint, CreateWebhookEndpointRequest(url: "http://127.0.0.1:9/hooks", eventTypes: ["license.issued"]))
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .enterprise, durationSeconds: 365 * 86400, features: ["render"])))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Backup Customer Ltd", email: "ops@backup.test"))
        let before = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: before.licenseKey)).reason == .valid)

        let backup = "\(stack.folder)/backup-1"
        let masterKey = "\(stack.folder)/secrets/master-key"
        var (status, output) = try await stack.ctl(["backup", "--to", backup, "--master-key", masterKey])
        #expect(status == 0, "\(output)")
        for service in ["issuance", "validation", "usage", "reporting", "integrations", "gateway"] {
            #expect(output.contains(service), "\(service) missing from: \(output)")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(backup)/\(service).db.enc"))
            #expect(bytes.range(of: Data("Backup Customer Ltd".utf8)) == nil && bytes.range(of: Data("SQLite format".utf8)) == nil, "\(service) is in clear")
        }

        // After the backup: a license that the restore will take back.
        let after = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: after.licenseKey)).reason == .valid)

        // Integrations has both out before issuance goes back (so that what follows is about
        // re-sending, not about events it never saw).
        func issuedDeliveries() async -> [String] {
            ((try? await admin.call(IntegrationsMethods.listDeliveries, ListDeliveriesRequest(page: PageRequest(pageSize: 100))))?.deliveries ?? [])
                .filter { $0.eventType == "license.issued" }.map(\.eventId)
        }
        #expect(await eventually(within: .seconds(30), every: .milliseconds(100)) { await issuedDeliveries().count == 2 })

        // A running service is not restored over.
        (status, output) = try await Stack.run("licensectl", ["restore", "--from", backup, "--data-dir", stack.folder, "--services", "issuance", "--master-key", masterKey])
        #expect(status != 0 && output.contains("stop it before restoring"), "\(output)")
        // Another master key, an altered manifest, an altered file: refused.
        let otherKey = "\(stack.folder)/other-master-key"
        try (String(repeating: "ab", count: 32) + "\n").write(toFile: otherKey, atomically: true, encoding: .utf8)
        await stack.stop("issuance")
        (status, output) = try await Stack.run("licensectl", ["restore", "--from", backup, "--data-dir", stack.folder, "--services", "issuance", "--master-key", otherKey])
        #expect(status != 0 && output.contains("made with master key"), "\(output)")
        let altered = "\(stack.folder)/backup-altered"
        try FileManager.default.copyItem(atPath: backup, toPath: altered)
        var damaged = try Data(contentsOf: URL(fileURLWithPath: "\(altered)/issuance.db.enc"))
        damaged[damaged.count / 2] ^= 0x01
        try damaged.write(to: URL(fileURLWithPath: "\(altered)/issuance.db.enc"))
        (status, output) = try await Stack.run("licensectl", ["restore", "--from", altered, "--data-dir", stack.folder, "--services", "issuance", "--master-key", masterKey])
        #expect(status != 0 && output.contains("altered"), "\(output)")

        // The restore of issuance to the backup's point.
        (status, output) = try await Stack.run("licensectl", ["restore", "--from", backup, "--data-dir", stack.folder, "--services", "issuance", "--master-key", masterKey])
        #expect(status == 0 && output.contains("issuance restored"), "\(output)")
        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        try await stack.waitUntilGatewaySees("issuance")
        await #expect(throws: RPCError.self) { _ = try await admin.call(IssuanceMethods.getLicense, GetLicenseRequest(id: after.license!.id)) }
        // Validation follows the feed again: the taken-back license is gone, the earlier one stays.
        #expect(await eventually(within: .seconds(30), every: .milliseconds(200)) {
            (try? await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: after.licenseKey)))?.reason == .notFound
        }, "validation still answers for a license the restore took back")
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: before.licenseKey)).reason == .valid)
        #expect(stack.log("validation").contains("started a new epoch"))
        // Life goes on: a license issued now works everywhere, reports see the restored truth.
        let later = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: later.licenseKey)).reason == .valid)
        // (The customer export shows what reporting's read model holds of them.)
        var seen: Set<String> = []
        var reportingPart = ""
        #expect(await eventually(within: .seconds(30), every: .milliseconds(300)) {
            let export: GatewayCustomerExport
            do {
                export = try await admin.call(GatewayMethods.exportCustomer, ExportCustomerRequest(customerId: customer.id))
            } catch {
                reportingPart = "\(error)"
                return false
            }
            guard let document = try? JSONSerialization.jsonObject(with: Data(export.json)) as? [String: Any],
                let reporting = (document["services"] as? [String: Any])?["reporting"] as? [String: Any]
            else { return false }
            reportingPart = "\(reporting)"
            seen = Set(((reporting["licenses"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String })
            return seen == [before.license!.id, later.license!.id]
        }, "reporting did not rebuild from the restored feed: \(seen) (before \(before.license!.id), after \(after.license!.id), later \(later.license!.id)); reporting holds \(reportingPart)")
            // Integrations did not send the restored history again, and the license issued after
        // the restore (which reuses a sequence number) went out under a new id.
        var issuedEvents: [String] = []
        #expect(await eventually(within: .seconds(30), every: .milliseconds(300)) {
            issuedEvents = await issuedDeliveries()
            return issuedEvents.count >= 3
        }, "\(issuedEvents)")
        try await Task.sleep(for: .seconds(1))
        issuedEvents = await issuedDeliveries()
        #expect(issuedEvents.count == 3 && Set(issuedEvents).count == 3, "\(issuedEvents)")
    }

    /// Crypto-shredding: a customer's name, e-mail, CRM id and named users are sealed with
    /// its own data key, so no database file holds them in clear, and erasing the customer
    /// destroys the key. Restoring a backup taken before the erasure does not bring the
    /// customer back: the restore carries the list of erased customers forward and the
    /// restored file never gets their keys.
    @Test func anErasedCustomerStaysUnreadableAfterAnOlderBackupIsRestored() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Named", licenseType: .perUser, durationSeconds: 365 * 86400, maxUsers: 5)))
        let erin = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Erin Shredded", email: "erin@shred.test", crmId: "crm-erin-77"))
        let kept = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Kept Customer", email: "kept@shred.test"))
        let issued = try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: erin.id))
        _ = try await admin.call(IssuanceMethods.assignUser, AssignUserRequest(id: issued.license!.id, user: "erin.named.user"))
        // Validation knows the named user by a pseudonym, and still answers for it.
        #expect(await eventually(within: .seconds(20), every: .milliseconds(100)) {
            (try? await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, user: "erin.named.user")))?.reason == .valid
        })
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, user: "mallory")).reason == .notActivated)
        let personal = ["Erin Shredded", "erin@shred.test", "crm-erin-77", "erin.named.user"]

        /// Every database file of every service (with its WAL), searched byte for byte.
        func filesHolding(_ needles: [String]) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: stack.folder).filter { $0.contains(".sqlite") }.flatMap { name -> [String] in
                let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(stack.folder)/\(name)"))
                return needles.filter { bytes.range(of: Data($0.utf8)) != nil }.map { "\(name): \($0)" }
            }
        }
        #expect(try filesHolding(personal).isEmpty, "personal data in clear before erasure")

        let backup = "\(stack.folder)/before-erasure"
        let masterKey = "\(stack.folder)/secrets/master-key"
        var (status, output) = try await stack.ctl(["backup", "--to", backup, "--master-key", masterKey, "--services", "issuance"])
        #expect(status == 0 && output.contains("issuance-erasures"), "\(output)")

        let erased = try await admin.call(GatewayMethods.eraseCustomer, EraseCustomerRequest(customerId: erin.id))
        #expect(erased.parts.allSatisfy { $0.code == .ok }, "\(erased.parts)")
        var after = try await admin.call(IssuanceMethods.getCustomer, GetByIdRequest(id: erin.id))
        #expect(after.name == "(erased)" && after.email.isEmpty && after.crmId.isEmpty)
        #expect(await eventually(within: .seconds(20), every: .milliseconds(100)) {
            (try? await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, user: "erin.named.user")))?.reason == .notActivated
        })
        #expect(try filesHolding(personal).isEmpty, "personal data in clear after erasure")

        // Issuance back to the point before the erasure.
        await stack.stop("issuance")
        (status, output) = try await Stack.run("licensectl", ["restore", "--from", backup, "--data-dir", stack.folder, "--services", "issuance", "--master-key", masterKey])
        #expect(status == 0 && output.contains("1 erased customer(s) stay erased"), "\(output)")
        // The restored file has no data key for the erased customer: nothing can open its fields.
        let restored = try DatabaseQueue(path: "\(stack.folder)/issuance.sqlite")
        let (keys, sealed) = try await restored.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM data_key WHERE owner = ?", arguments: [erin.id]) ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM data_key WHERE owner = ?", arguments: [kept.id]) ?? -1)
        }
        try restored.close()
        #expect(keys == 0 && sealed == 1)
        try stack.start("issuance")
        try await stack.waitUntilServing("issuance")
        try await stack.waitUntilGatewaySees("issuance")
        after = try await admin.call(IssuanceMethods.getCustomer, GetByIdRequest(id: erin.id))
        #expect(after.name == "(erased)" && after.email.isEmpty && after.crmId.isEmpty, "\(after)")
        #expect(try await admin.call(IssuanceMethods.getCustomer, GetByIdRequest(id: kept.id)).name == "Kept Customer")
        #expect(try await admin.call(IssuanceMethods.getLicense, GetLicenseRequest(id: issued.license!.id)).namedUsers.isEmpty)
        #expect(try filesHolding(personal).isEmpty, "personal data in clear after the restore")
        // The erased customer's named user does not come back to validation either.
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: issued.licenseKey, user: "erin.named.user")).reason == .notActivated)
    }

    /// `backup --every` keeps taking backups on a schedule and keeps the newest `--keep`.
    @Test func scheduledBackupsKeepTheNewest() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let root = "\(stack.folder)/scheduled"
        let process = Process()
        process.executableURL = Stack.binaries.appendingPathComponent("licensectl")
        process.arguments = [
            "backup", "--to", root, "--every", "1s", "--keep", "2", "--services", "issuance,gateway", "--master-key", "\(stack.folder)/secrets/master-key",
            "--gateway", "unix:\(stack.folder)/run/gateway.sock",
        ]
        process.environment = ProcessInfo.processInfo.environment.merging(["LM_API_KEY": stack.adminKey]) { $1 }
        let log = "\(stack.folder)/scheduled.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle.nullDevice
        try process.run()
        func complete() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { FileManager.default.fileExists(atPath: "\(root)/\($0)/manifest.json") }
        }
        // Four runs or more: two are left.
        let removed = await eventually(within: .seconds(60), every: .milliseconds(200)) { complete().count == 2 && ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).count >= 2 }
        try await Task.sleep(for: .seconds(3))
        process.terminate()
        process.waitUntilExit()
        #expect(removed && complete().count == 2, "\(complete())")
        let printed = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(printed.contains("removed the old backup"), "\(printed)")
        // Each is a whole backup that restores (checked by the manifest and its files).
        for folder in complete() {
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(folder)/issuance.db.enc") && FileManager.default.fileExists(atPath: "\(root)/\(folder)/manifest.mac"))
        }
    }
}
