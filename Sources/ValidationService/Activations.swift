import Foundation
import GRDB
import LicensingCore
import LicensingRPC
import LicensingRuntime
import LicensingWire

// Machines: activation binds a license to a machine fingerprint (stored only as a hash)
// within the license's machine limit, its overage allowance and its department's quota.

extension ValidationService {
    public func activate(_ request: ActivateRequest, _ call: ServerCall) async throws -> ActivateResponse {
        try Check.fingerprint(request.fingerprint)
        try Check.length(request.machineName, "machine_name")
        try Check.length(request.platform, "platform")
        try Check.statedRegion(request.region)
        let now = clock.now
        let region = region(stated: request.region, clientIP: request.clientIp)
        let fingerprintHash = LicenseCertificates.fingerprintHash(request.fingerprint)
        enum Attempt {
            case denied(ActivateResponse)
            case bound(LicenseFacts, Machine, ReasonCode)
        }
        // The license must be usable here and now, then the user and the machine limits.
        func attempt() async throws -> Attempt {
            guard let (_, facts) = try await lookUp(request.licenseKey, call) else {
                return .denied(ActivateResponse(reason: .notFound, detail: "no license has this key"))
            }
            var usable = facts
            usable.licenseType = .unspecified
            let decision = LicenseDecider.decide(usable, ValidationQuery(region: region), now: now)
            guard decision.allows else { return .denied(ActivateResponse(reason: decision.reason, detail: decision.detail)) }
            if facts.licenseType == .perUser {
                let userCheck = LicenseDecider.decide(facts, ValidationQuery(region: region, user: request.user, userKey: userKey(request.user, facts)), now: now)
                guard userCheck.allows else { return .denied(ActivateResponse(reason: userCheck.reason, detail: userCheck.detail)) }
            }
            guard activationLimiter.allow(facts.licenseID) else {
                throw RPCError(.resourceExhausted, "too many activations of license \(facts.licenseID); try again later")
            }
            let outcome = try await writes.write { db in
                try Self.bind(facts, fingerprintHash, name: request.machineName, platform: request.platform, offlineUntil: 0, now: now, in: db)
            }
            guard outcome.0 == .valid, let machine = outcome.1 else { return .denied(ActivateResponse(reason: outcome.0, detail: outcome.2)) }
            return .bound(facts, machine, decision.reason)
        }
        // Read-your-writes: a denial is given only once the replica has caught up with
        // issuance (a license reinstated or a limit raised a moment ago grants).
        var outcome = try await attempt()
        if case .denied = outcome {
            await feed.catchUp()
            outcome = try await attempt()
        }
        switch outcome {
        case .denied(let answer):
            return answer
        case .bound(let facts, let machine, let reason):
            let certificate = try await certificate(for: facts, fingerprintHash: fingerprintHash, validFor: 0, now: now)
            return ActivateResponse(
                reason: reason, machine: machine, certificate: certificate?.armored ?? "",
                detail: certificate == nil ? "no signing key has reached validation yet; the certificate follows on the next activation" : "")
        }
    }

    /// Binds a machine to the license within its machine limit, overage allowance and
    /// department quota: by an online activation (`offlineUntil` 0) or by an offline license
    /// file valid until `offlineUntil`. A machine bound before is not bound twice; a file
    /// extends its binding, an online activation makes it an online one. Bindings by files
    /// that have ended no longer count.
    static func bind(
        _ facts: LicenseFacts, _ fingerprintHash: String, name: String, platform: String, offlineUntil: Int64, now: Int64, in db: Database
    ) throws -> (ReasonCode, Machine?, String) {
        let existing = try Machine.fetch(db, license: facts.licenseID, fingerprintHash: fingerprintHash)
        if var machine = existing, machine.offlineUntil == 0 || machine.offlineUntil > now {
            machine.lastSeen = max(now, machine.lastSeen)
            machine.offlineUntil = offlineUntil == 0 || machine.offlineUntil == 0 ? 0 : max(machine.offlineUntil, offlineUntil)
            try db.execute(
                sql: "UPDATE machine SET last_seen = ?, offline_until = ? WHERE id = ?", arguments: [machine.lastSeen, machine.offlineUntil, machine.id])
            return (.valid, machine, "")
        }
        let counted = "(offline_until = 0 OR offline_until > ?)"
        let used = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM machine WHERE license_id = ? AND \(counted)", arguments: [facts.licenseID, now]) ?? 0
        if let limit = facts.allowance(facts.maxMachines), used >= limit {
            return (.machineLimit, nil, "the license is activated on \(used) machines (offline files included), its limit with overage is \(limit); deactivate one first")
        }
        if let department = try LicenseReplica.department(facts.departmentID, in: db), department.maxMachines > 0 {
            let inDepartment = try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM machine WHERE department_id = ? AND \(counted)", arguments: [facts.departmentID, now]) ?? 0
            let limit = Int(department.maxMachines) * Int(min(max(facts.overagePermille, 1000), 1_000_000)) / 1000
            if inDepartment >= limit {
                return (.machineLimit, nil, "department \(facts.departmentID) has used its \(department.maxMachines) machines")
            }
        }
        if var machine = existing {
            // Its offline file has ended: bound again, within the limits just checked.
            machine.lastSeen = max(now, machine.lastSeen)
            machine.offlineUntil = offlineUntil
            try db.execute(
                sql: "UPDATE machine SET last_seen = ?, offline_until = ? WHERE id = ?", arguments: [machine.lastSeen, offlineUntil, machine.id])
            try ValidationEvents.machine(facts, id: machine.id, fingerprintHash: fingerprintHash, activated: true, offline: offlineUntil != 0, now: now, in: db)
            return (.valid, machine, "")
        }
        let machine = Machine(
            id: EntityID.make("mach"), licenseId: facts.licenseID, fingerprintHash: fingerprintHash,
            name: name, platform: platform, firstSeen: now, lastSeen: now, offlineUntil: offlineUntil)
        try db.execute(
            sql: """
                INSERT INTO machine (id, license_id, department_id, fingerprint_hash, name, platform, first_seen, last_seen, offline_until)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [machine.id, machine.licenseId, facts.departmentID, fingerprintHash, machine.name, machine.platform, now, now, offlineUntil])
        try ValidationEvents.machine(facts, id: machine.id, fingerprintHash: fingerprintHash, activated: true, offline: offlineUntil != 0, now: now, in: db)
        return (.valid, machine, "")
    }

    public func deactivate(_ request: DeactivateRequest, _ call: ServerCall) async throws -> DeactivateResponse {
        if request.licenseKey.isEmpty, !request.licenseId.isEmpty {
            return try await deactivate(license: request.licenseId, machine: request.machineId, call)
        }
        try Check.fingerprint(request.fingerprint)
        guard let (_, facts) = try await lookUp(request.licenseKey, call) else {
            throw RPCError.notFound("no license has this key")
        }
        let fingerprintHash = LicenseCertificates.fingerprintHash(request.fingerprint)
        let now = clock.now
        let removed = try await writes.write { db in
            guard let machine = try Machine.fetch(db, license: facts.licenseID, fingerprintHash: fingerprintHash) else { return 0 }
            try db.execute(sql: "DELETE FROM machine WHERE id = ?", arguments: [machine.id])
            try ValidationEvents.machine(facts, id: machine.id, fingerprintHash: fingerprintHash, activated: false, offline: false, now: now, in: db)
            return 1
        }
        // Safe to repeat: a machine already deactivated is not activated, so a retry after a
        // lost answer succeeds; `deactivated` says whether this call freed it.
        return DeactivateResponse(deactivated: removed > 0)
    }

    /// Operators and license holders free a machine by its id (they do not hold its fingerprint).
    private func deactivate(license: String, machine: String, _ call: ServerCall) async throws -> DeactivateResponse {
        try Check.nonEmpty(machine, "machine_id")
        try Check.length(machine, "machine_id")
        guard let facts = try await self.facts(license: license, call) else { throw RPCError.notFound("no license \(license)") }
        let now = clock.now
        let removed = try await writes.write { db -> Int in
            guard let row = try Row.fetchOne(db, sql: "SELECT fingerprint_hash FROM machine WHERE id = ? AND license_id = ?", arguments: [machine, facts.licenseID]) else {
                return 0
            }
            try db.execute(sql: "DELETE FROM machine WHERE id = ?", arguments: [machine])
            try ValidationEvents.machine(facts, id: machine, fingerprintHash: row["fingerprint_hash"], activated: false, offline: false, now: now, in: db)
            return 1
        }
        return DeactivateResponse(deactivated: removed > 0)
    }

    /// A license's facts by id, within the caller's tenant; a miss pulls the feed once.
    func facts(license: String, _ call: ServerCall) async throws -> LicenseFacts? {
        try Check.length(license, "license_id")
        let tenant = call.metadata[RPCMetadata.tenant]
        func read() throws -> LicenseFacts? {
            try database.read { db in try LicenseReplica.facts(licenseID: license, in: db) }.flatMap { tenant == nil || $0.tenantID == tenant ? $0 : nil }
        }
        if let found = try read() { return found }
        await feed.catchUp()
        return try read()
    }

    public func listMachines(_ request: ListMachinesRequest, _ call: ServerCall) async throws -> ListMachinesResponse {
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
        return try LicenseCertificates.sign(payload, with: key)
    }
}

extension Machine {
    init(row: Row) {
        self.init(
            id: row["id"], licenseId: row["license_id"], fingerprintHash: row["fingerprint_hash"], name: row["name"],
            platform: row["platform"], firstSeen: row["first_seen"], lastSeen: row["last_seen"], offlineUntil: row["offline_until"])
    }

    static func fetch(_ db: Database, license: String, fingerprintHash: String) throws -> Machine? {
        try Row.fetchOne(
            db, sql: "SELECT * FROM machine WHERE license_id = ? AND fingerprint_hash = ?", arguments: [license, fingerprintHash]
        ).map(Machine.init(row:))
    }
}
