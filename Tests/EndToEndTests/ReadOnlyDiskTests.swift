import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GRDB
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The stack on an ext4 file system of the test's own (a loop-mounted image, as root)
/// that the kernel turns read-only while the services run, as it does after a disk error
/// with `errors=remount-ro`: writes are refused with a status and a message that say so,
/// validations go on, and once the operator has the file system writable again and
/// restarts the services, nothing acknowledged is lost and no database is damaged.
@Suite(.serialized) struct ReadOnlyDiskTests {
    static let run = DiskFullTests.run

    /// Whether this machine lets the test loop-mount an ext4 image (root, loop devices).
    static let canMount: Bool = {
        let image = NSTemporaryDirectory() + "lm-ext4-probe-" + UUID().uuidString.prefix(8)
        let folder = image + ".mnt"
        defer {
            try? FileManager.default.removeItem(atPath: image)
            try? FileManager.default.removeItem(atPath: folder)
        }
        guard getuid() == 0, FileManager.default.createFile(atPath: image, contents: nil),
            truncate(image, 8 << 20) == 0, run("/sbin/mkfs.ext4", ["-q", image]) == 0,
            (try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)) != nil,
            run("/bin/mount", ["-o", "loop", image, folder]) == 0
        else { return false }
        _ = run("/bin/umount", [folder])
        return true
    }()

    @Test(.enabled(if: canMount, "needs root and loop devices to mount an ext4 image"))
    func aFileSystemTurnedReadOnlyRefusesWritesClearlyKeepsValidatingAndLosesNothing() async throws {
        let stack = try Stack()
        let image = stack.folder + ".img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil) && truncate(image, 128 << 20) == 0)
        #expect(Self.run("/sbin/mkfs.ext4", ["-q", image]) == 0)
        #expect(Self.run("/bin/mount", ["-o", "loop,errors=remount-ro", image, stack.folder]) == 0)
        chmod(stack.folder, 0o700)
        var result: Result<Void, any Error> = .success(())
        do {
            try await exercise(stack, image: image)
        } catch {
            result = .failure(error)
        }
        await stack.stopAll()
        Self.run("/bin/umount", ["-l", stack.folder])
        try? FileManager.default.removeItem(atPath: image)
        try result.get()
    }

    func exercise(_ stack: Stack, image: String) async throws {
        try await stack.startAll()
        let admin = stack.gatewayClient()
        defer { Task { await admin.close() } }
        let product = try await admin.call(IssuanceMethods.createProduct, CreateProductRequest(name: "Studio", code: "STU"))
        let policy = try await admin.call(IssuanceMethods.createPolicy, CreatePolicyRequest(policy: Policy(
            productId: product.id, name: "Standard", licenseType: .perDevice, durationSeconds: 365 * 86400, maxMachines: 5)))
        let customer = try await admin.call(IssuanceMethods.createCustomer, CreateCustomerRequest(name: "Disk Co", email: "ops@disk.test"))
        func issue() async throws -> IssueLicenseResponse {
            try await admin.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        }
        let first = try await issue()
        let acknowledged = [first.license!.id, try await issue().license!.id]
        _ = try await admin.call(ValidationMethods.activate, ActivateRequest(licenseKey: first.licenseKey, fingerprint: "before-the-error"))
        #expect(try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: first.licenseKey, fingerprint: "before-the-error")).valid)

        // The kernel turns the file system read-only, with the services' files open.
        #expect(Self.run("/bin/mount", ["-o", "remount,abort", stack.folder]) == 0)

        for write in ["issueLicense", "activate"] {
            do {
                if write == "issueLicense" {
                    _ = try await issue()
                } else {
                    _ = try await admin.call(ValidationMethods.activate, ActivateRequest(licenseKey: first.licenseKey, fingerprint: "after-the-error"))
                }
                Issue.record("\(write) succeeded on a read-only file system")
            } catch let error as RPCError {
                #expect(error.code == .unavailable && error.message.contains("read-only"), "\(write): \(error)")
            }
        }
        var failures: [String] = []
        for _ in 0..<10 {
            do {
                let answer = try await admin.call(ValidationMethods.validate, ValidateRequest(licenseKey: first.licenseKey, fingerprint: "before-the-error"))
                if !answer.valid { failures.append("\(answer.reason)") }
            } catch {
                failures.append("\(error)")
            }
            try? await Task.sleep(for: .milliseconds(150))
        }
        #expect(failures.isEmpty, "validations failed on a read-only file system: \(failures)")

        // The operator repairs and remounts the file system, and restarts the services.
        await stack.stopAll()
        #expect(Self.run("/bin/umount", [stack.folder]) == 0)
        #expect([0, 1].contains(Self.run("/sbin/e2fsck", ["-fy", image])), "e2fsck found what it could not repair")
        #expect(Self.run("/bin/mount", ["-o", "loop", image, stack.folder]) == 0)
        try await DiskFullTests.expectIntactDatabases(in: stack.folder, holding: acknowledged)
        try await stack.startAll()
        let again = stack.gatewayClient()
        _ = try await again.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy.id, customerId: customer.id))
        _ = try await again.call(ValidationMethods.activate, ActivateRequest(licenseKey: first.licenseKey, fingerprint: "after-the-repair"))
        await again.close()
    }
}
