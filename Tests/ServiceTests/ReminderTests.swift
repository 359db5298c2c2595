import Foundation
import NIOCore
import NIOPosix
import GRDB
@testable import IntegrationsService
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Logging
import ServiceLifecycle
import Testing

/// A real SMTP server for a test: Debian's aiosmtpd, STARTTLS with the project's test
/// certificates, every message kept in a Maildir the test reads.
final class SMTPServer: @unchecked Sendable {
    // @unchecked: the process is started and stopped by the test that owns it.
    let port: Int
    let maildir: String
    let ca: String
    private let process = Process()

    /// Makes the certificates (off the test's threads: the tests share a small pool) and
    /// starts aiosmtpd.
    static func start(folder: TemporaryFolder) async throws -> SMTPServer {
        let certificates = "\(folder.path)/tls"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../deploy/make-certs").standardized
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                let make = Process()
                make.executableURL = script
                make.arguments = [certificates]
                make.standardOutput = FileHandle.nullDevice
                do {
                    try make.run()
                    make.waitUntilExit()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        return try SMTPServer(folder: folder, certificates: certificates)
    }

    private init(folder: TemporaryFolder, certificates: String) throws {
        ca = "\(certificates)/ca.pem"
        maildir = "\(folder.path)/mail"
        port = Int.random(in: 20_000...40_000)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [
            "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(port)", "--tlscert", "\(certificates)/server.pem", "--tlskey", "\(certificates)/server.key",
            "-c", "aiosmtpd.handlers.Mailbox", maildir,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// aiosmtpd ignores SIGTERM: it is killed.
    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Every message received so far, raw, in the order they arrived (Maildir names sort by
    /// second only: two messages in one second are ordered by their files' times).
    var messages: [String] {
        let new = "\(maildir)/new"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: new)) ?? []
        func arrived(_ name: String) -> Date {
            ((try? FileManager.default.attributesOfItem(atPath: "\(new)/\(name)"))?[.modificationDate] as? Date) ?? .distantPast
        }
        return names.map { ($0, arrived($0)) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
            .compactMap { try? String(contentsOfFile: "\(new)/\($0.0)", encoding: .utf8) }
    }

    func waitUntilListening() async -> Bool {
        await eventually(within: .seconds(15), every: .milliseconds(100)) {
            guard let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get() else {
                return false
            }
            try? await channel.close()
            return true
        }
    }
}

@Suite(.serialized) struct ReminderTests {
    @Test func remindersGoOutOnScheduleOverSMTPAndARenewalStartsAgain() async throws {
        let folder = TemporaryFolder()
        let smtp = try await SMTPServer.start(folder: folder)
        defer { smtp.stop() }
        #expect(await smtp.waitUntilListening(), "aiosmtpd did not start (apt-get install python3-aiosmtpd)")
        let start: Int64 = 1_800_000_000 / 86400 * 86400
        try await ComplianceStack.run(clock: ManualLicenseClock(start)) { stack in
            var options = IntegrationsService.Options()
            options.httpPort = 0
            options.followInterval = .milliseconds(20)
            options.reminderInterval = .milliseconds(50)
            options.smtp = SMTPMailer.Settings(host: "localhost", port: smtp.port, startTLS: true, from: "licenses@vendor.test", ca: smtp.ca)
            let path = stack.folder.path
            let service = IntegrationsService(
                database: try IntegrationsService.openDatabase(path: "\(path)/integrations.sqlite"), issuance: RPCClient(endpoint: stack.issuance.endpoint),
                validation: RPCClient(endpoint: stack.validation.endpoint), usage: RPCClient(endpoint: stack.usage.endpoint),
                clock: stack.clock, options: options, logger: Logger(label: "test.integrations"))
            let endpoint = Endpoint.inProcess(InProcessServer("integrations", router: service.router(), executor: testServerExecutor))
            let parts = try service.services(configuration: RPCServerConfiguration(endpoints: [endpoint]))
            let running = runInBackground(parts)
            defer { running.cancel() }
            let client = RPCClient(endpoint: endpoint)
            defer { Task { await client.close() } }

            // A 20-day license with 3 days of grace; reminders 14, 7 and 1 days before.
            let (policy, customer) = try await seedCatalogue(stack.issuance, duration: 20 * 86400, grace: 3 * 86400, features: ["export", "render"])
            _ = try await client.call(IntegrationsMethods.setRenewalOptions, RenewalOptions(policyId: policy, days: [14, 7, 1], renewalUrl: "https://shop.vendor.test/renew/{license_id}"))
            let issued = try await stack.issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            let license = issued.license!
            #expect(try await eventually { (try? await client.call(IntegrationsMethods.listReminders, ListRemindersRequest(licenseId: license.id))) != nil })
            var schedule = try await client.call(IntegrationsMethods.listReminders, ListRemindersRequest(licenseId: license.id)).reminders
            #expect(schedule.map(\.step) == ["14d", "7d", "1d", "grace", "ended"] && schedule.allSatisfy { $0.status == "scheduled" })

            // Nothing is due yet; 6 days on, the 14-day reminder goes out.
            try await Task.sleep(for: .milliseconds(200))
            #expect(smtp.messages.isEmpty)
            stack.clock.advance(by: 6 * 86400 + 60)
            #expect(try await eventually(within: .seconds(20)) { smtp.messages.count == 1 }, "\(smtp.messages.count) messages")
            let first = smtp.messages[0]
            #expect(first.contains("To: ops@acme.test"))
            #expect(first.contains("Subject: Your CAD Pro license expires in 14 days"), "\(first.prefix(600))")
            #expect(first.contains("https://shop.vendor.test/renew/\(license.id)") && first.contains("It includes: export, render."))
            #expect(first.contains("text/html") && first.contains("<a href=\"https://shop.vendor.test/renew/\(license.id)\">"))
            #expect(!first.contains(issued.licenseKey), "the key is never in an e-mail")

            // Both the 7- and 1-day steps pass while nothing runs: only the latest goes out.
            stack.clock.advance(by: 13 * 86400)
            #expect(try await eventually(within: .seconds(20)) { smtp.messages.count == 2 })
            #expect(smtp.messages[1].contains("expires in 1 day\n") || smtp.messages[1].contains("expires in 1 day\r"), "\(smtp.messages[1].prefix(400))")
            // The step is recorded once the server has taken the message.
            #expect(try await eventually {
                schedule = try await client.call(IntegrationsMethods.listReminders, ListRemindersRequest(licenseId: license.id)).reminders
                return schedule.map(\.status) == ["sent", "skipped", "sent", "scheduled", "scheduled"]
            }, "\(schedule)")

            // The wall clock set back ten days (before the 7-day step) and forward again:
            // nothing goes out twice, and the schedule is unchanged.
            stack.clock.advance(by: -10 * 86400)
            try await Task.sleep(for: .milliseconds(400))
            stack.clock.advance(by: 10 * 86400)
            try await Task.sleep(for: .milliseconds(400))
            #expect(smtp.messages.count == 2)
            schedule = try await client.call(IntegrationsMethods.listReminders, ListRemindersRequest(licenseId: license.id)).reminders
            #expect(schedule.map(\.status) == ["sent", "skipped", "sent", "scheduled", "scheduled"], "\(schedule)")

            // A renewal starts the schedule again: no grace reminder for the old end date.
            _ = try await stack.issuance.call(IssuanceMethods.renewLicense, RenewLicenseRequest(id: license.id))
            // Once integrations has the new end date (from issuance's feed), time moves on.
            #expect(try await eventually {
                try await client.call(IntegrationsMethods.listReminders, ListRemindersRequest(licenseId: license.id)).reminders.first?.expiresAt ?? 0 > license.expiresAt
            })
            stack.clock.advance(by: 2 * 86400)
            try await Task.sleep(for: .milliseconds(400))
            #expect(smtp.messages.count == 2)
            schedule = try await client.call(IntegrationsMethods.listReminders, ListRemindersRequest(licenseId: license.id)).reminders
            #expect(schedule.first?.expiresAt ?? 0 > license.expiresAt && schedule.allSatisfy { $0.status == "scheduled" }, "\(schedule)")

            // Each reminder also went out as a webhook event.
            let expiring = try await ReminderTests.outboxTypes(path)
            #expect(expiring.filter { $0 == "license.expiring" }.count == 2)
        }
    }

    static func outboxTypes(_ folder: String) async throws -> [String] {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let database = try DatabasePool(path: "\(folder)/integrations.sqlite", configuration: configuration)
        return try await database.read { try String.fetchAll($0, sql: "SELECT type FROM outbox ORDER BY seq") }
    }
}
