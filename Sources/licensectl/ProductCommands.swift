import ArgumentParser
import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

// What client products do, from the command line: activation, seats, offline files.

struct ActivateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "activate", abstract: "Activate a machine; prints its signed certificate.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "License key.") var key: String
    @Option(help: "Machine fingerprint.") var fingerprint: String
    @Option(help: "Machine name.") var name: String = ""
    @Option(help: "Platform, e.g. linux-x86_64.") var platform: String = ""
    @Option(help: "Named user (per-user licenses).") var user: String = ""
    @Option(help: "ISO country code.") var region: String = ""

    func run() async throws {
        let request = ActivateRequest(licenseKey: key, fingerprint: fingerprint, machineName: name, platform: platform, user: user, region: region)
        let response = try await global.run(ValidationMethods.activate, request) { response in
            guard let machine = response.machine else { return "\(response.reason)\n\(response.detail)" }
            return "\(response.reason)  machine \(machine.id)\n\(response.certificate)"
        }
        if response.machine == nil { throw ExitCode(1) }
    }
}

struct DeactivateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deactivate", abstract: "Free a machine's activation.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "License key.") var key: String
    @Option(help: "Machine fingerprint.") var fingerprint: String

    func run() async throws {
        _ = try await global.run(ValidationMethods.deactivate, DeactivateRequest(licenseKey: key, fingerprint: fingerprint)) {
            $0.deactivated ? "deactivated" : "already deactivated (this machine holds no activation of the license)"
        }
    }
}

struct MachinesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "machines", abstract: "List a license's machines.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "License id (lic_...) or license key.") var license: String

    func run() async throws {
        _ = try await global.run(ValidationMethods.listMachines, ListMachinesRequest(licenseId: try await global.licenseID(license))) { response in
            response.machines.map {
                "\($0.id)  \($0.name.isEmpty ? "-" : $0.name)  \($0.platform.isEmpty ? "-" : $0.platform)  first \(Output.time($0.firstSeen))  last \(Output.time($0.lastSeen))"
            }.joined(separator: "\n")
        }
    }
}

struct SeatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seats", abstract: "Floating seats.", subcommands: [Checkout.self, Heartbeat.self, Checkin.self, List.self])

    static func describe(_ response: SeatLeaseResponse) -> String {
        if let lease = response.lease, response.reason == .valid {
            return "lease \(lease.leaseId)  until \(Output.time(lease.expiresAt))  seats \(response.seatsInUse)/\(response.seatLimit == 0 ? "unlimited" : String(response.seatLimit))"
        }
        let detail = response.detail.isEmpty ? "" : "\n\(response.detail)"
        if response.queuePosition > 0 { return "\(response.reason)  queued at position \(response.queuePosition)\(detail)" }
        return "\(response.reason)\(detail)"
    }

    struct Checkout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a seat; exit 1 when none is free.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License key.") var key: String
        @Option(help: "This client's id (one seat per client).") var client: String
        @Option(help: "User.") var user: String = ""
        @Option(parsing: .unconditional, help: "Lease time in seconds (0 = the service default).") var ttl: Int64 = 0
        @Flag(help: "Wait in line when all seats are taken.") var queue = false

        func run() async throws {
            let request = CheckoutSeatRequest(licenseKey: key, clientId: client, user: user, ttlSeconds: ttl, queue: queue)
            let response = try await global.run(ValidationMethods.checkoutSeat, request) { SeatsCommand.describe($0) }
            if response.reason != .valid { throw ExitCode(1) }
        }
    }

    struct Heartbeat: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Extend a lease.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Lease id.") var lease: String

        func run() async throws {
            _ = try await global.run(ValidationMethods.heartbeatSeat, SeatLeaseRequest(leaseId: lease)) { SeatsCommand.describe($0) }
        }
    }

    struct Checkin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a seat back.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Lease id.") var lease: String

        func run() async throws {
            _ = try await global.run(ValidationMethods.checkinSeat, SeatLeaseRequest(leaseId: lease)) { _ in "checked in" }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Who holds a license's seats now.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "License id (lic_...) or license key.") var license: String

        func run() async throws {
            _ = try await global.run(ValidationMethods.listSeats, ListSeatsRequest(licenseId: try await global.licenseID(license))) { response in
                (["\(response.leases.count) of \(response.seatLimit == 0 ? "unlimited" : String(response.seatLimit)) seats in use"]
                    + response.leases.map { "\($0.leaseId)  client \($0.clientId)  \($0.user)  since \(Output.time($0.acquiredAt))  until \(Output.time($0.expiresAt))" })
                    .joined(separator: "\n")
            }
        }
    }
}

struct OfflineFileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "offline-file", abstract: "Make a license file for a machine that cannot reach the server.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "License key.") var key: String
    @Option(help: "The offline machine's fingerprint.") var fingerprint: String
    @Option(parsing: .unconditional, help: "Validity, e.g. 30d (default: the service's maximum).") var valid: String = "0"
    @Flag(help: "Encrypt so that only the holder of the license key can read it.") var encrypt = false
    @Option(help: "Write the file here instead of standard output.") var output: String?

    func run() async throws {
        let request = CreateOfflineLicenseRequest(licenseKey: key, fingerprint: fingerprint, validSeconds: try parseDuration(valid), encrypt: encrypt)
        let response = try await global.run(ValidationMethods.createOfflineLicense, request) { output == nil ? $0.armored : "valid until \(Output.time($0.notAfter))" }
        if let output {
            try response.armored.write(toFile: output, atomically: true, encoding: .utf8)
        }
    }
}

struct VerifyFileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-file", abstract: "Check a license file as an offline product would; exit 0 when good, 1 when not, 2 when it cannot be checked.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "License file.") var file: String
    @Option(help: "This machine's fingerprint.") var fingerprint: String
    @Option(help: "License key (needed for encrypted files).") var key: String?
    @Option(help: "Public key set: the JSON of `licensectl keys list --json` (default: ask the gateway).") var keys: String?
    @Option(parsing: .unconditional, help: "The latest time this machine has seen (Unix seconds), for clock-rollback detection.") var lastSeen: Int64 = 0

    func run() async throws {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: file) ? "it cannot be read as text" : "there is no such file"
            throw ValidationError("cannot read the license file \(file): \(reason)")
        }
        let publicKeys = try await loadKeys()
        let licenseKey = try key.map { try LicenseKey(parsing: $0) }
        do {
            let (payload, seen) = try OfflineLicenseFile.verify(
                text, licenseKey: licenseKey, publicKeys: publicKeys, fingerprint: fingerprint,
                now: Int64(Date().timeIntervalSince1970), lastSeen: lastSeen)
            print(global.json ? JSONOutput.encode(payload) : "good: license \(payload.licenseId) until \(Output.time(payload.notAfter)); last seen now \(seen)")
        } catch {
            print("bad: \(error)")
            throw ExitCode(1)
        }
    }

    private func loadKeys() async throws -> [String: [UInt8]] {
        if let keys {
            let data = try Data(contentsOf: URL(fileURLWithPath: keys))
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any], let list = object["keys"] as? [[String: Any]] else {
                throw ValidationError("\(keys) is not the JSON of `licensectl keys list --json`")
            }
            var out: [String: [UInt8]] = [:]
            for entry in list {
                guard let kid = entry["kid"] as? String, let bytes = entry["public_key"] as? [Int] else { continue }
                out[kid] = bytes.map { UInt8(truncatingIfNeeded: $0) }
            }
            return out
        }
        let client = try global.client()
        defer { Task { await client.close() } }
        let set = try await client.call(IssuanceMethods.listPublicKeys, ListPublicKeysRequest(), timeout: .seconds(global.timeout))
        return Dictionary(uniqueKeysWithValues: set.keys.map { ($0.kid, $0.publicKey) })
    }
}
