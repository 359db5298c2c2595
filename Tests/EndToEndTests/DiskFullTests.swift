import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GRDB
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The stack on a small file system of the test's own (a tmpfs, mounted as root), filled
/// up while it serves: writes are refused with a status and a message that name the
/// cause, validations go on, nothing acknowledged is lost, no database is damaged, and
/// writes work again by themselves once space is freed.
@Suite(.serialized) struct DiskFullTests {
    /// Whether this machine lets the test mount a tmpfs (root, and a kernel that allows it).
    static let canMount: Bool = {
        let folder = NSTemporaryDirectory() + "lm-mount-probe-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        guard getuid() == 0, (try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)) != nil,
            run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", folder]) == 0
        else { return false }
        _ = run("/bin/umount", [folder])
        return true
    }()

    @discardableResult
    static func run(_ program: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    @Test(.enabled(if: canMount, "needs root and a kernel that allows mounting a tmpfs"))
    func aFullDiskRefusesWritesClearlyKeepsValidatingAndRecovers() async throws {
        let stack = try Stack()
        #expect(Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", stack.folder]) == 0)
        var result: Result<Void, any Error> = .success(())
        do {
            try await exercise(stack)
        } catch {
            result = .failure(error)
        }
        await stack.stopAll()
        Self.run("/bin/umount", ["-l", stack.folder])
        try result.get()
    }

    func exercise(_ stack: Stack) async throws {
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .enterprise, durationSeconds: 365 * 86400)))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Disk Co", email: "ops@disk.test"))
        func issue() async throws -> IssueLicenseResponse {
            try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        }
        let first = try await issue()
        var acknowledged = [first.license!.id]
        /// Validations paced under the per-key rate limit; the failures, as said.
        func validations(_ count: Int) async -> [String] {
            var failures: [String] = []
            for _ in 0..<count {
                do {
                    let answer = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: first.licenseKey))
                    if !answer.valid { failures.append("\(answer.reason)") }
                } catch {
                    failures.append("\(error)")
                }
                try? await Task.sleep(for: .milliseconds(150))
            }
            return failures
        }

        // Validation knows the license before the disk fills (it stores what it follows).
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: first.licenseKey)).valid)

        // Fill the disk, then write until a write is refused (the WAL may have room left).
        let filler = "\(stack.folder)/filler"
        _ = Self.run("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=256k"])
        var refusal: RPCError?
        for _ in 0..<500 where refusal == nil {
            do {
                acknowledged.append(try await issue().license!.id)
            } catch let error as RPCError {
                refusal = error
            }
        }
        let full = try #require(refusal, "no write was refused on a full disk")
        #expect(full.code == .resourceExhausted && full.message.contains("disk") && full.message.contains("full"), "\(full)")
        let failures = await validations(10)
        #expect(failures.isEmpty, "validations failed while the disk was full: \(failures)")

        // Space freed: writes work again by themselves.
        try FileManager.default.removeItem(atPath: filler)
        var recovered = false
        for _ in 0..<100 where !recovered {
            if let issued = try? await issue() {
                acknowledged.append(issued.license!.id)
                recovered = true
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(recovered, "writes did not resume after space was freed")
        // If the validation log could not be written meanwhile (its WAL may have had room),
        // it says so, and says when it writes again.
        if stack.log("validation").contains("validation log cannot be written") {
            #expect(await eventually(within: .seconds(30)) { stack.log("validation").contains("validation log written again") })
        }

        // Nothing acknowledged is lost, and no database is damaged.
        await stack.stopAll()
        try await Self.expectIntactDatabases(in: stack.folder, holding: acknowledged)
    }

    /// Every database in the folder passes `PRAGMA integrity_check`, and issuance's holds
    /// every license that was acknowledged.
    static func expectIntactDatabases(in folder: String, holding acknowledged: [String]) async throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: folder) where name.hasSuffix(".sqlite") {
            let database = try DatabaseQueue(path: "\(folder)/\(name)")
            let check = try await database.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
            #expect(check == ["ok"], "\(name): \(check)")
            if name == "issuance.sqlite" {
                let stored = try await database.read { db in try Set(String.fetchAll(db, sql: "SELECT id FROM license")) }
                #expect(Set(acknowledged).isSubset(of: stored), "acknowledged licenses missing: \(Set(acknowledged).subtracting(stored))")
            }
            try database.close()
        }
    }
}
