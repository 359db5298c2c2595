import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Machines: activation binds a license to a machine fingerprint (stored only as a hash)
// within the license's machine limit, its overage allowance and its department's quota.

extension ValidationService {
    func activate(_ request: ActivateRequest, _ call: ServerCall) async throws -> ActivateResponse {
        try Check.fingerprint(request.fingerprint)
        try Check.length(request.machineName, "machine_name")
        try Check.length(request.platform, "platform")
        let now = clock.now
        guard let (key, facts) = try await lookUp(request.licenseKey, call) else {
            return ActivateResponse(reason: .notFound, detail: "no license has this key")
        }
        _ = key
        let region = region(stated: request.region, clientIP: request.clientIp)
        // The license must be usable here and now; machine and user checks come next.
        var usable = facts
        usable.licenseType = .unspecified
        let decision = LicenseDecider.decide(usable, ValidationQuery(region: region), now: now)
        guard decision.allows else { return ActivateResponse(reason: decision.reason, detail: decision.detail) }
        if facts.licenseType == .perUser {
            let userCheck = LicenseDecider.decide(facts, ValidationQuery(region: region, user: request.user), now: now)
            guard userCheck.allows else { return ActivateResponse(reason: userCheck.reason, detail: userCheck.detail) }
        }
        guard activationLimiter.allow(facts.licenseID) else {
            throw RPCError(.resourceExhausted, "too many activations of license \(facts.licenseID); try again later")
        }
        let fingerprintHash = LicenseCertificates.fingerprintHash(request.fingerprint)
        let outcome = try await writes.write { db -> (ReasonCode, Machine?, String) in
            if let existing = try Machine.fetch(db, license: facts.licenseID, fingerprintHash: fingerprintHash) {
                // Activating the same machine again is not a second activation.
                try db.execute(sql: "UPDATE machine SET last_seen = ? WHERE id = ?", arguments: [max(now, existing.lastSeen), existing.id])
                var machine = existing
                machine.lastSeen = max(now, existing.lastSeen)
                return (.valid, machine, "")
            }
            let used = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM machine WHERE license_id = ?", arguments: [facts.licenseID]) ?? 0
            if let limit = facts.allowance(facts.maxMachines), used >= limit {
                return (.machineLimit, nil, "the license is activated on \(used) machines, its limit with overage is \(limit); deactivate one first")
            }
            if let department = try LicenseReplica.department(facts.departmentID, in: db), department.maxMachines > 0 {
                let inDepartment = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM machine WHERE department_id = ?", arguments: [facts.departmentID]) ?? 0
                let limit = Int(department.maxMachines) * Int(max(facts.overagePermille, 1000)) / 1000
                if inDepartment >= limit {
                    return (.machineLimit, nil, "department \(facts.departmentID) has used its \(department.maxMachines) machines")
                }
            }
            let machine = Machine(
                id: EntityID.make("mach"), licenseId: facts.licenseID, fingerprintHash: fingerprintHash,
                name: request.machineName, platform: request.platform, firstSeen: now, lastSeen: now)
            try db.execute(
                sql: """
                    INSERT INTO machine (id, license_id, department_id, fingerprint_hash, name, platform, first_seen, last_seen)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [machine.id, machine.licenseId, facts.departmentID, fingerprintHash, machine.name, machine.platform, now, now])
            return (.valid, machine, "")
        }
        guard outcome.0 == .valid, let machine = outcome.1 else {
            return ActivateResponse(reason: outcome.0, detail: outcome.2)
        }
        let certificate = try await certificate(for: facts, fingerprintHash: fingerprintHash, validFor: 0, now: now)
        return ActivateResponse(reason: decision.reason, machine: machine, certificate: certificate?.armored ?? "",
                                detail: certificate == nil ? "no signing key has reached validation yet; the certificate follows on the next activation" : "")
    }

    func deactivate(_ request: DeactivateRequest, _ call: ServerCall) async throws -> DeactivateResponse {
        try Check.fingerprint(request.fingerprint)
        guard let (_, facts) = try await lookUp(request.licenseKey, call) else {
            throw RPCError.notFound("no license has this key")
        }
        let fingerprintHash = LicenseCertificates.fingerprintHash(request.fingerprint)
        let removed = try await writes.write { db in
            try db.execute(sql: "DELETE FROM machine WHERE license_id = ? AND fingerprint_hash = ?", arguments: [facts.licenseID, fingerprintHash])
            return db.changesCount
        }
        guard removed > 0 else { throw RPCError.notFound("this machine is not activated on license \(facts.licenseID)") }
        return DeactivateResponse(deactivated: true)
    }

    func listMachines(_ request: ListMachinesRequest, _ call: ServerCall) async throws -> ListMachinesResponse {
        try Check.nonEmpty(request.licenseId, "license_id")
        let tenant = call.metadata[RPCMetadata.tenant]
        let size = request.page?.pageSize == 0 || request.page == nil ? 100 : min(Int(request.page!.pageSize), 1000)
        let after = request.page?.pageToken ?? ""
        let machines = try await database.read { db -> [Machine]? in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM replica_license WHERE license_id = ? AND (? IS NULL OR tenant_id = ?)", arguments: [request.licenseId, tenant, tenant]) == true else {
                return nil
            }
            return try Row.fetchAll(
                db, sql: "SELECT * FROM machine WHERE license_id = ? AND id > ? ORDER BY id LIMIT ?", arguments: [request.licenseId, after, size]
            ).map(Machine.init(row:))
        }
        guard let machines else { throw RPCError.notFound("no license \(request.licenseId)") }
        return ListMachinesResponse(machines: machines, nextPageToken: machines.count == size ? machines.last?.id ?? "" : "")
    }

    /// A certificate of the license's facts, bound to a machine when a fingerprint hash is given.
    func certificate(for facts: LicenseFacts, fingerprintHash: String, validFor seconds: Int64, now: Int64) async throws -> LicenseCertificate? {
        guard let key = try await signingKeys.current() else { return nil }
        let licenseEnd = facts.graceEndsAt
        var notAfter = seconds > 0 ? now.saturatingAdd(seconds) : (licenseEnd != 0 ? licenseEnd : now + 365 * 86400)
        if licenseEnd != 0 { notAfter = min(notAfter, licenseEnd) }
        let payload = CertificatePayload(
            version: LicenseCertificates.currentVersion, licenseId: facts.licenseID, licenseType: facts.licenseType,
            features: facts.features, notBefore: now, notAfter: notAfter, licenseExpiresAt: facts.expiresAt,
            graceSeconds: facts.graceSeconds, fingerprintSha256: fingerprintHash, issuedAt: now,
            maxMachines: facts.maxMachines, maxSeats: facts.maxSeats)
        return LicenseCertificates.sign(payload, with: key)
    }
}

extension Machine {
    init(row: Row) {
        self.init(
            id: row["id"], licenseId: row["license_id"], fingerprintHash: row["fingerprint_hash"], name: row["name"],
            platform: row["platform"], firstSeen: row["first_seen"], lastSeen: row["last_seen"])
    }

    static func fetch(_ db: Database, license: String, fingerprintHash: String) throws -> Machine? {
        try Row.fetchOne(
            db, sql: "SELECT * FROM machine WHERE license_id = ? AND fingerprint_hash = ?", arguments: [license, fingerprintHash]
        ).map(Machine.init(row:))
    }
}
