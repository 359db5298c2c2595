import Foundation
import GRDB
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import ServiceLifecycle
import LicensingTestSupport
import Testing
import ValidationService

@Suite struct ValidationLogTests {
    /// Every validation answered before SIGTERM is in the log after the service stops.
    @Test func nothingAcceptedIsLostOnGracefulShutdown() async throws {
        let folder = TemporaryFolder()
        let issuance = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"),
            keyHashSecret: testSecret, masterKey: testMasterKey, logger: Logger(label: "test"))
        try await withServer(issuance.router(), in: folder, name: "issuance") { issuanceClient in
            let (policy, customer) = try await seedCatalogue(issuanceClient)
            let key = try await issuanceClient.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
            let database = try ValidationService.openDatabase(path: "\(folder.path)/validation.sqlite")
            let validation = try ValidationService(
                database: database, issuance: RPCClient(endpoint: issuanceClient.endpoint), keyHashSecret: testSecret,
                masterKey: testMasterKey, logger: Logger(label: "test"))
            let parts = validation.backgroundServices()
            let server = InProcessServer("validation", router: validation.router(), executor: testServerExecutor)
            let group = ServiceGroup(configuration: .init(services: parts.map { .init(service: $0) }, logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            let client = RPCClient(endpoint: .inProcess(server), configuration: .init(connections: 4))
            try await withThrowingTaskGroup(of: Void.self) { calls in
                for index in 0..<300 {
                    calls.addTask {
                        _ = try await client.call(
                            ValidationMethods.validate, ValidateRequest(licenseKey: index % 3 == 0 ? LicenseKey.generate().description : key, region: "DE"))
                    }
                }
                try await calls.waitForAll()
            }
            await client.close()
            await group.triggerGracefulShutdown()
            try await running.value
            let logged = try await database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM validation_log") }
            #expect(logged == 300)
            let notFound = try await database.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM validation_log WHERE reason = ?", arguments: [ReasonCode.notFound.rawValue])
            }
            #expect(notFound == 100)
        }
    }

    @Test func unixSocketsAreForOwnerAndGroupOnly() async throws {
        let folder = TemporaryFolder()
        var router = RPCRouter()
        router.register(HealthMethods.check) { _, _ in HealthCheckResponse(service: "test") }
        try await withServer(router, on: [.unix(path: "\(folder.path)/mode.sock")]) { _ in
            let attributes = try FileManager.default.attributesOfItem(atPath: "\(folder.path)/mode.sock")
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o660)
        }
    }
}
