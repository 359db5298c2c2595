import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingWire
import LicensingTestSupport
import Testing
@testable import ValidationService

@Suite struct ReplicaTests {
    func event(_ seq: UInt64, _ id: String, _ state: LicenseState) -> ChangeEvent {
        ChangeEvent(
            seq: seq, kind: .license, action: "license.changed",
            keyHash: String(repeating: id.hasSuffix("1") ? "a" : "b", count: 64),
            subject: .license(License(id: id, productId: "prod_1", customerId: "cus_1", licenseType: .perDevice, state: state)))
    }

    @Test func eventsApplyExactlyOnceAndThePositionPersists() async throws {
        let folder = TemporaryFolder()
        let path = "\(folder.path)/validation.sqlite"
        let replica = try LicenseReplica(database: try ValidationService.openDatabase(path: path))
        #expect(try await replica.apply([event(1, "lic_1", .active), event(2, "lic_2", .active)]) == 2)
        // A batch delivered again, or overlapping, changes nothing already applied.
        #expect(try await replica.apply([event(1, "lic_1", .revoked), event(2, "lic_2", .revoked)]) == 2)
        #expect(try replica.facts(keyHash: String(repeating: "a", count: 64))?.state == .active)
        #expect(try await replica.apply([event(2, "lic_2", .revoked), event(3, "lic_1", .suspended)]) == 3)
        #expect(try replica.facts(keyHash: String(repeating: "a", count: 64))?.state == .suspended)
        #expect(try replica.facts(keyHash: String(repeating: "b", count: 64))?.state == .active)

        // Reopened, the replica resumes where it stopped.
        let reopened = try LicenseReplica(database: try ValidationService.openDatabase(path: path))
        #expect(try await reopened.position() == 3)
        let rows = try await reopened.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM replica_license") }
        #expect(rows == 2)
    }
}
