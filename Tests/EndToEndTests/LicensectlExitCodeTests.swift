import Foundation
import LicensingCore
import Testing

/// licensectl's one exit-code rule: 0 done and yes, 1 done and no, 2 not done. Each
/// command in its failure modes, with the message a person reads.
@Suite(.serialized) struct LicensectlExitCodeTests {
    @Test func everyCommandFollowsTheRule() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let product = try await stack.ctlJSON(["product", "create", "--name", "Exit", "--code", "EXIT"])["id"] as! String
        let policy = try await stack.ctlJSON(["policy", "create", "--product", product, "--name", "One", "--type", "per-device", "--max-machines", "1", "--duration", "30d"])["id"] as! String
        let customer = try await stack.ctlJSON(["customer", "create", "--name", "Exit Ltd"])["id"] as! String
        let issued = try await stack.ctlJSON(["license", "issue", "--policy", policy, "--customer", customer])
        let key = issued["license_key"] as! String
        let license = (issued["license"] as! [String: Any])["id"] as! String

        // 0: done, yes.
        #expect(try await stack.ctl(["activate", key, "--fingerprint", "m1"]).0 == 0)
        #expect(try await stack.ctl(["validate", key, "--fingerprint", "m1"]).0 == 0)
        #expect(try await stack.ctl(["health"]).0 == 0)
        // Either form names a license, for every command that takes one.
        #expect(try await stack.ctl(["license", "suspend", key, "--reason", "check"]).0 == 0)
        #expect(try await stack.ctl(["license", "reinstate", key]).0 == 0)
        #expect(try await stack.ctl(["machines", key]).0 == 0)

        // 1: done, no.
        #expect(try await stack.ctl(["validate", key, "--fingerprint", "m2"]).0 == 1)
        #expect(try await stack.ctl(["validate", LicenseKey.generate().description]).0 == 1)
        #expect(try await stack.ctl(["activate", key, "--fingerprint", "m2"]).0 == 1)
        let file = "\(stack.folder)/m1.lic"
        #expect(try await stack.ctl(["offline-file", key, "--fingerprint", "m1", "--valid", "7d", "--output", file]).0 == 0)
        #expect(try await stack.ctl(["verify-file", file, "--fingerprint", "elsewhere"]).0 == 1)

        // 2: not done, and why.
        for arguments in [["validate", "not-a-key"], ["activate", "not-a-key", "--fingerprint", "m1"], ["deactivate", "not-a-key", "--fingerprint", "m1"]] {
            let (status, output) = try await stack.ctl(arguments)
            #expect(status == 2, "\(arguments): \(output)")
        }
        let (showStatus, showOutput) = try await stack.ctl(["license", "show", "nonsense"])
        #expect(showStatus == 2)
        #expect(showOutput.contains("\"nonsense\" is neither a license id (lic_...) nor a license key"), "\(showOutput)")
        #expect(try await stack.ctl(["license", "show", "lic_nothing"]).0 == 2)
        let (negative, negativeOutput) = try await stack.ctl(["policy", "create", "--product", product, "--name", "X", "--max-machines", "-1"])
        #expect(negative == 2)
        #expect(negativeOutput.contains("--max-machines") && !negativeOutput.contains("Missing value"), "\(negativeOutput)")
        let (duration, durationOutput) = try await stack.ctl(["policy", "create", "--product", product, "--name", "X", "--duration", "-5d"])
        #expect(duration == 2)
        #expect(durationOutput.contains("\"-5d\" is not a duration"), "\(durationOutput)")
        #expect(durationOutput.contains("licensectl policy create"), "the subcommand's usage, not the top level's: \(durationOutput)")
        let (region, regionOutput) = try await stack.ctl(["validate", key, "--fingerprint", "m1", "--region", "germany"])
        #expect(region == 2)
        #expect(regionOutput.contains("is not an ISO 3166-1 alpha-2 code"), "\(regionOutput)")
        let (missing, missingOutput) = try await stack.ctl(["verify-file", "\(stack.folder)/no-such.lic", "--fingerprint", "m1"])
        #expect(missing == 2)
        #expect(missingOutput.contains("cannot read the license file") && !missingOutput.contains("NSCocoaErrorDomain"), "\(missingOutput)")
        let nowhere = "unix:\(stack.folder)/run/nothing.sock"
        for arguments in [["health"], ["verify-file", file, "--fingerprint", "m1"], ["validate", key]] {
            let (status, output) = try await stack.ctl(arguments, gateway: nowhere)
            #expect(status == 2, "\(arguments) with the gateway down: \(output)")
            #expect(output.contains("nothing listens at \(nowhere)"), "\(output)")
        }
        #expect(try await stack.ctl(["no-such-command"]).0 == 2)
        #expect(try await Stack.run("licensectl", ["--help"]).0 == 0)
        #expect(try await Stack.run("licensectl", ["validate", "--help"]).0 == 0)
        _ = license
    }
}

/// What licensectl prints says what it means.
@Suite(.serialized) struct LicensectlOutputTests {
    @Test func outputsNameLimitsUsageAndExpiry() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let product = try await stack.ctlJSON(["product", "create", "--name", "Out", "--code", "OUT"])["id"] as! String
        let policy = try await stack.ctlJSON(["policy", "create", "--product", product, "--name", "Seats", "--type", "enterprise", "--max-seats", "2", "--duration", "30d"])["id"] as! String
        let customer = try await stack.ctlJSON(["customer", "create", "--name", "Out Ltd", "--enterprise"])["id"] as! String
        let department = try await stack.ctlJSON(["department", "create", "--customer", customer, "--name", "Lab", "--max-seats", "1"])["id"] as! String
        let issued = try await stack.ctlJSON(["license", "issue", "--policy", policy, "--customer", customer, "--department", department])
        let key = issued["license_key"] as! String

        // A heartbeat shows the license's real seat count.
        let checkout = try await stack.ctlJSON(["seats", "checkout", key, "--client", "c1"])
        let lease = (checkout["lease"] as! [String: Any])["lease_id"] as! String
        let (_, heartbeat) = try await stack.ctl(["seats", "heartbeat", lease])
        #expect(heartbeat.contains("seats 1/2"), "\(heartbeat)")
        // The department's own limit is named, as the machine limit is.
        let (refused, refusal) = try await stack.ctl(["seats", "checkout", key, "--client", "c2"])
        #expect(refused == 1)
        #expect(refusal.contains("SEAT_LIMIT") && refusal.contains("department \(department) uses 1 of its 1 seats"), "\(refusal)")

        // The overview shows machines once, and usage.
        let (_, overview) = try await stack.ctl(["overview", key])
        #expect(overview.components(separatedBy: "\n").filter { $0.hasPrefix("machines") }.count == 1, "\(overview)")
        #expect(overview.contains("usage        none in the last 30 days"), "\(overview)")

        // An expired API key is marked.
        // Far enough ahead that a loaded machine still creates it before it expires.
        let soon = Int64(Date().timeIntervalSince1970) + 5
        let (created, _) = try await stack.ctl(["apikey", "create", "--name", "short-lived", "--role", "support", "--expires", String(soon)])
        #expect(created == 0)
        var listed = ""
        for _ in 0..<300 {
            listed = try await stack.ctl(["apikey", "list"]).1
            if listed.contains("EXPIRED") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(listed.split(separator: "\n").contains { $0.contains("short-lived") && $0.contains("EXPIRED") }, "\(listed)")

        // A signed answer, verified against the public key set.
        let (verified, signed) = try await stack.ctl(["validate", key, "--nonce"])
        #expect(verified == 0, "\(signed)")
        #expect(signed.contains("signed answer verified (key "), "\(signed)")

        // Help for a command that does not exist is an error.
        let (help, helpOutput) = try await Stack.run("licensectl", ["help", "nonsense"])
        #expect(help == 2)
        #expect(helpOutput.contains("there is no command \"nonsense\""), "\(helpOutput)")
    }
}

/// Messages speak in flags and dates, not request fields and Unix seconds.
@Suite(.serialized) struct LicensectlMessageTests {
    @Test func refusalsNameFlagsAndDates() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let product = try await stack.ctlJSON(["product", "create", "--name", "Msg", "--code", "MSG"])["id"] as! String
        let (overage, overageOutput) = try await stack.ctl(["policy", "create", "--product", product, "--name", "X", "--overage", "-3"])
        #expect(overage == 2 && overageOutput.contains("--overage is a multiple of the limits"), "\(overageOutput)")
        let (long, longOutput) = try await stack.ctl(["policy", "create", "--product", product, "--name", "X", "--duration", "200y"])
        #expect(long == 2)
        #expect(longOutput.contains("--duration must be between 0 and 3155760000 seconds (100 years)") && !longOutput.contains("policy.duration_seconds"), "\(longOutput)")
        let policy = try await stack.ctlJSON(["policy", "create", "--product", product, "--name", "Year", "--duration", "365d"])["id"] as! String
        let customer = try await stack.ctlJSON(["customer", "create", "--name", "Msg Ltd"])["id"] as! String
        let license = (try await stack.ctlJSON(["license", "issue", "--policy", policy, "--customer", customer])["license"] as! [String: Any])["id"] as! String
        let (past, pastOutput) = try await stack.ctl(["license", "renew", license, "--to", "2001-01-01"])
        #expect(past == 2)
        #expect(pastOutput.contains("--to 2001-01-01T00:00:00Z is not after the current expiry ("), "\(pastOutput)")
        #expect(!pastOutput.contains("978307200"), "\(pastOutput)")
    }
}

/// `licensectl usage`: what a product reports, by key, from the command line or a file.
@Suite(.serialized) struct LicensectlUsageTests {
    @Test func recordAndShowUsage() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let product = try await stack.ctlJSON(["product", "create", "--name", "Meter", "--code", "METER"])["id"] as! String
        let policy = try await stack.ctlJSON(["policy", "create", "--product", product, "--name", "Year", "--duration", "365d"])["id"] as! String
        let customer = try await stack.ctlJSON(["customer", "create", "--name", "Meter Ltd"])["id"] as! String
        let key = try await stack.ctlJSON(["license", "issue", "--policy", policy, "--customer", customer])["license_key"] as! String

        let (one, oneOutput) = try await stack.ctl(["usage", "record", key, "--feature", "export", "--quantity", "3", "--event-id", "e-1"])
        #expect(one == 0, "\(oneOutput)")
        #expect(oneOutput.contains("recorded 1, already recorded 0, refused 0"), "\(oneOutput)")
        let file = "\(stack.folder)/events.jsonl"
        try """
            {"event_id": "e-1", "license_key": "\(key)", "feature": "export", "quantity": 3}
            {"event_id": "e-2", "license_key": "\(key)", "feature": "render", "quantity": 2, "user": "ann"}
            {"event_id": "e-3", "license_key": "\(LicenseKey.generate())", "feature": "render", "quantity": 1}

            """.write(toFile: file, atomically: true, encoding: .utf8)
        let (some, someOutput) = try await stack.ctl(["usage", "record", "--file", file])
        #expect(some == 1, "a refused event makes the answer no: \(someOutput)")
        #expect(someOutput.contains("recorded 1, already recorded 1, refused 1"), "\(someOutput)")
        #expect(someOutput.contains("event 3 (e-3): no license has this key"), "\(someOutput)")
        let (shown, usage) = try await stack.ctl(["usage", "show", key])
        #expect(shown == 0)
        #expect(usage.contains("export  3  in 1 events") && usage.contains("render  2  in 1 events"), "\(usage)")
        let (bad, badOutput) = try await stack.ctl(["usage", "record", "--file", "\(stack.folder)/missing.jsonl"])
        #expect(bad == 2 && badOutput.contains("there is no such file"), "\(badOutput)")
    }
}
