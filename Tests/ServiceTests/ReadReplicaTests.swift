import Foundation
import GRDB
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Logging
import ServiceLifecycle
import Synchronization
import Testing
@testable import ValidationService

/// Validation read replicas: a replica answers validations from its copy, forwards the rest
/// to its primary, never denies what its primary already granted, and ships its log.
@Suite struct ReadReplicaTests {
    /// Issuance, a validation primary and `replicas` read replicas of it, in-process.
    struct Cluster {
        let issuance: RPCClient
        let primary: RPCClient
        let primaryDatabase: DatabasePool
        let replicas: [RPCClient]
        let replicaDatabases: [DatabasePool]
        let replicaServices: [ValidationService]
    }

    func withCluster<T>(
        replicas count: Int = 1, beforeReplicas: (RPCClient, RPCClient, DatabasePool) async throws -> Void = { _, _, _ in },
        _ body: (Cluster) async throws -> T
    ) async throws -> T {
        let folder = TemporaryFolder()
        let logger = Logger(label: "test")
        var options = ValidationService.Options()
        options.feedPollInterval = .seconds(30)  // only catch-ups and explicit polls move the copies
        options.activationsPerHour = 1_000_000
        let issuance = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"), keyHashSecret: testSecret, masterKey: testMasterKey,
            logger: logger)
        return try await withServer(issuance.router(), in: folder, name: "issuance") { issuanceClient in
            _ = try await issuanceClient.call(IssuanceMethods.createSigningKey, CreateSigningKeyRequest())
            let primaryDatabase = try ValidationService.openDatabase(path: "\(folder.path)/primary.sqlite")
            let primary = try ValidationService(
                database: primaryDatabase, issuance: RPCClient(endpoint: issuanceClient.endpoint), keyHashSecret: testSecret, masterKey: testMasterKey,
                options: options, logger: logger)
            let primaryServer = InProcessServer("validation", router: primary.router(), executor: testServerExecutor)
            let primaryClient = RPCClient(endpoint: .inProcess(primaryServer))
            try await beforeReplicas(issuanceClient, primaryClient, primaryDatabase)
            var services = [primary]
            var clients: [RPCClient] = []
            var databases: [DatabasePool] = []
            for index in 0..<count {
                let database = try ValidationService.openDatabase(path: "\(folder.path)/replica-\(index).sqlite")
                let replica = try ValidationService(
                    database: database, issuance: RPCClient(endpoint: issuanceClient.endpoint), keyHashSecret: testSecret, masterKey: testMasterKey,
                    options: options, role: .replica(primary: primaryClient), logger: logger)
                services.append(replica)
                databases.append(database)
                clients.append(RPCClient(endpoint: .inProcess(InProcessServer("replica-\(index)", router: replica.router(), executor: testServerExecutor))))
            }
            let background = services.flatMap { $0.backgroundServices() }
            let group = ServiceGroup(configuration: .init(services: background.map { .init(service: $0) }, logger: logger))
            let running = Task { try await group.run() }
            defer { running.cancel() }
            let result = try await body(Cluster(
                issuance: issuanceClient, primary: primaryClient, primaryDatabase: primaryDatabase, replicas: clients,
                replicaDatabases: databases, replicaServices: Array(services.dropFirst())))
            await group.triggerGracefulShutdown()
            _ = await running.result
            return result
        }
    }

    func issueNodeLocked(_ issuance: RPCClient, machines: UInt32 = 3) async throws -> String {
        let (policy, customer) = try await seedCatalogue(issuance, type: .perDevice, maxMachines: machines)
        return try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
    }

    @Test func aMachineActivatedAnywhereIsValidOnEveryReplicaAtOnce() async throws {
        try await withCluster(replicas: 2) { cluster in
            let key = try await issueNodeLocked(cluster.issuance)
            // Activated through one replica (forwarded to the primary), validated at once on the other.
            let activated = try await cluster.replicas[0].call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "pc-1"))
            #expect(activated.reason == .valid)
            let onOther = try await cluster.replicas[1].call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: "pc-1"))
            #expect(onOther.valid, "a replica denied a machine its primary had activated: \(onOther.detail)")
            // Activated on the primary directly: the same.
            _ = try await cluster.primary.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "pc-2"))
            #expect(try await cluster.replicas[0].call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: "pc-2")).valid)
            // A machine never activated stays refused, after the catch-up.
            #expect(try await cluster.replicas[0].call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: "pc-9")).reason == .fingerprintMismatch)
            // A deactivation reaches the replicas with the next pull.
            _ = try await cluster.replicas[1].call(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: "pc-1"))
            for replica in cluster.replicaServices { try await replica.machineMirror?.pollOnce() }
            #expect(try await cluster.replicas[0].call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: "pc-1")).reason == .fingerprintMismatch)
            // What a replica forwards is the primary's: its machines list.
            let machines = try await cluster.replicas[0].call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: activated.machine?.licenseId ?? ""))
            #expect(machines.machines.count == 1)
        }
    }

    @Test func aNewReplicaCopiesMachinesWhoseEventsWerePruned() async throws {
        let issued = Mutex("")
        try await withCluster(replicas: 1, beforeReplicas: { issuance, primary, primaryDatabase in
            let (policy, customer) = try await seedCatalogue(issuance, type: .perDevice)
            let license = try await issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer))
            issued.withLock { $0 = license.licenseKey }
            for index in 0..<3 {
                _ = try await primary.call(ValidationMethods.activate, ActivateRequest(licenseKey: license.licenseKey, fingerprint: "pc-\(index)"))
            }
            // More machines than a snapshot page, activated long ago: their events are pruned
            // (retention), all but the journal's head.
            try await primaryDatabase.write { db in
                for index in 3..<5003 {
                    try db.execute(
                        sql: "INSERT INTO machine (id, license_id, fingerprint_hash, first_seen, last_seen) VALUES (?, ?, ?, 1, 1)",
                        arguments: ["mach_old\(index)", license.license?.id ?? "", LicenseCertificates.fingerprintHash("pc-\(index)")])
                }
                try db.execute(sql: "DELETE FROM validation_event WHERE seq < (SELECT MAX(seq) FROM validation_event)")
            }
        }) { cluster in
            let replica = cluster.replicaServices[0]
            try await replica.machineMirror?.pollOnce()
            try await replica.feed.pollOnce()
            #expect(replica.copying().isEmpty)
            let copied = try await cluster.replicaDatabases[0].read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM machine") }
            #expect(copied == 5003)
            let key = issued.withLock { $0 }
            for fingerprint in ["pc-0", "pc-2", "pc-4321", "pc-5002"] {
                let answer = try await cluster.replicas[0].call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: fingerprint))
                #expect(answer.valid, "\(fingerprint): \(answer.reason) \(answer.detail)")
            }
        }
    }

    @Test func validationsAnsweredByAReplicaReachThePrimarysLogOnce() async throws {
        try await withCluster(replicas: 1) { cluster in
            let key = try await issueNodeLocked(cluster.issuance)
            _ = try await cluster.primary.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "pc-1"))
            for _ in 0..<25 {
                #expect(try await cluster.replicas[0].call(ValidationMethods.validate, ValidateRequest(licenseKey: key, fingerprint: "pc-1")).valid)
            }
            func primaryLog() async throws -> Int {
                try await cluster.primaryDatabase.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM validation_log") ?? 0 }
            }
            let shipped = try await eventually { try await primaryLog() == 25 }
            let held = try await primaryLog()
            #expect(shipped, "the primary's log holds \(held) of 25 validations")
            // The replica keeps only its highest shipped row (so no row number is used twice).
            let left = try await cluster.replicaDatabases[0].read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM validation_log") ?? 0 }
            #expect(left <= 1)

            // A batch sent again (its answer lost) is stored once; rows must come in order.
            let entries = (1...3).map { LoggedValidation(row: UInt64($0), occurredAt: 1_800_000_000, licenseId: "lic_x", reason: .valid) }
            for _ in 0..<2 {
                let answer = try await cluster.primary.call(ValidationMethods.appendReplicaLog, AppendReplicaLogRequest(replicaId: "replica-a", entries: entries))
                #expect(answer.storedThrough == 3)
            }
            #expect(try await primaryLog() == 28)
            let more = [LoggedValidation(row: 3, licenseId: "lic_x"), LoggedValidation(row: 4, licenseId: "lic_x")]
            #expect(try await cluster.primary.call(ValidationMethods.appendReplicaLog, AppendReplicaLogRequest(replicaId: "replica-a", entries: more)).storedThrough == 4)
            #expect(try await primaryLog() == 29)
            #expect(await expectCode(.invalidArgument) {
                _ = try await cluster.primary.call(
                    ValidationMethods.appendReplicaLog,
                    AppendReplicaLogRequest(replicaId: "replica-a", entries: [LoggedValidation(row: 9), LoggedValidation(row: 8)]))
            } == nil)
            #expect(await expectCode(.invalidArgument) {
                _ = try await cluster.primary.call(ValidationMethods.appendReplicaLog, AppendReplicaLogRequest(replicaId: "", entries: entries))
            } == nil)
            // A replica is not a primary: it refuses what only a primary answers.
            let refused = await expectCode(.failedPrecondition) {
                _ = try await cluster.replicaServices[0].appendReplicaLog(
                    AppendReplicaLogRequest(replicaId: "replica-b", entries: entries),
                    ServerCall(method: ValidationMethods.appendReplicaLog.name, payload: [], metadata: [:], deadline: .now + .seconds(5), logger: Logger(label: "test")))
            }
            #expect(refused == nil)
        }
    }

    @Test func aReplicaCutOffFromItsPrimaryValidatesAndRefusesWrites() async throws {
        try await withCluster(replicas: 0) { cluster in
            let (policy, customer) = try await seedCatalogue(cluster.issuance)
            let key = try await cluster.issuance.call(IssuanceMethods.issueLicense, IssueLicenseRequest(policyId: policy, customerId: customer)).licenseKey
            // A replica of a primary nobody can reach: its own copy answers, writes fail fast.
            let folder = TemporaryFolder()
            let database = try ValidationService.openDatabase(path: "\(folder.path)/orphan.sqlite")
            let unreachable = RPCClient(endpoint: .unix(path: "\(folder.path)/no-primary.sock"))
            let orphan = try ValidationService(
                database: database, issuance: cluster.issuance, keyHashSecret: testSecret, masterKey: testMasterKey,
                role: .replica(primary: unreachable), logger: Logger(label: "test"))
            let client = RPCClient(endpoint: .inProcess(InProcessServer("orphan", router: orphan.router(), executor: testServerExecutor)))
            try await orphan.feed.pollOnce()
            // It says it has not copied the primary's machines: not ready, and no gateway sends it validations.
            #expect(orphan.copying() == ["copying the primary's machines"])
            #expect(try await client.call(HealthMethods.check, HealthCheckRequest()).status == .degraded)
            let started = ContinuousClock.now
            #expect(try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, feature: "export")).valid)
            #expect(await expectCode(.unavailable) {
                _ = try await client.call(ValidationMethods.activate, ActivateRequest(licenseKey: key, fingerprint: "pc-3"))
            } == nil)
            // A denial waits for a catch-up with the primary, which gives up (generous for a loaded machine).
            #expect(try await client.call(ValidationMethods.validate, ValidateRequest(licenseKey: key, feature: "nope")).reason == .featureNotEntitled)
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }
}
