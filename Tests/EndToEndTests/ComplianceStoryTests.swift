import Foundation
import LicensingCore
import LicensingRPC
import LicensingTestSupport
import LicensingWire
import Testing

/// The real executables, driven through the gateway as a vendor and its products would.
@Suite(.serialized) struct ComplianceStoryTests {
    /// A license for two machines is used from five: validation rolls the minute up, usage
    /// raises a sharing alert, an operator lists and acknowledges it with licensectl. A
    /// metered feature past its quota is refused by validation with QUOTA_EXCEEDED.
    @Test func keySharingRaisesAnAlertAnOperatorAcknowledges() async throws {
        let stack = try Stack()
        try await stack.startAll()
        let product = try await stack.ctlJSON(["product", "create", "--name", "Render Farm", "--code", "RF"])["id"] as! String
        let policy = try await stack.ctlJSON([
            "policy", "create", "--product", product, "--name", "Two machines", "--type", "enterprise", "--max-machines", "2", "--features", "export",
        ])["id"] as! String
        let customer = try await stack.ctlJSON(["customer", "create", "--name", "Sharing Ltd"])["id"] as! String
        let issued = try await stack.ctlJSON(["license", "issue", "--policy", policy, "--customer", customer])
        let key = issued["license_key"] as! String
        let license = (issued["license"] as! [String: Any])["id"] as! String

        // Five machines validate the same key.
        for machine in 1...5 {
            let (status, output) = try await stack.ctl(["validate", key, "--fingerprint", "office-pc-\(machine)"])
            #expect(status == 0, "\(output)")
        }

        // The minute closes, validation publishes its rollup, usage applies its rules.
        var alerts: [[String: Any]] = []
        let raised = try await eventually(within: .seconds(150), every: .seconds(1)) {
            alerts = (try await stack.ctlJSON(["alerts", "list", license])["alerts"] as? [[String: Any]]) ?? []
            // The five validations may fall in two minutes: the alert opens on the first
            // rollup past the limit and its detail follows the day's count.
            return (alerts.first?["detail"] as? String)?.contains("5 distinct machines") == true
        }
        #expect(raised, "no alert; usage log: \(stack.log("usage").suffix(2000))")
        #expect(alerts.count == 1)
        #expect(alerts.first?["rule"] as? String == "fingerprint-sharing")
        #expect((alerts.first?["detail"] as? String)?.contains("5 distinct machines") == true, "\(alerts)")
        let id = try #require(alerts.first?["id"] as? String)

        let (listed, text) = try await stack.ctl(["alerts", "list"])
        #expect(listed == 0 && text.contains(id) && text.contains("fingerprint-sharing") && text.contains("open"), "\(text)")
        let (acked, ackText) = try await stack.ctl(["alerts", "ack", id])
        #expect(acked == 0 && ackText.contains("acknowledged by"), "\(ackText)")
        #expect(try await stack.ctl(["alerts", "list", license]).1.contains("no alerts"))
        let all = try await stack.ctlJSON(["alerts", "list", license, "--all"])["alerts"] as? [[String: Any]] ?? []
        #expect(all.count == 1 && all.first?["acknowledged"] as? Bool == true && !(all.first?["acknowledged_by"] as? String ?? "").isEmpty)
        // Bad input: a clear message and exit 2.
        let (badRule, badRuleText) = try await stack.ctl(["alerts", "list", "--rule", "sharing"])
        #expect(badRule == 2 && badRuleText.contains("no rule"), "\(badRuleText)")

        // A metered feature: three a day, used four times.
        #expect(try await stack.ctl(["quota", "set", license, "--feature", "export", "--limit", "3", "--period", "day"]).0 == 0)
        #expect(try await stack.ctl(["usage", "record", key, "--feature", "export", "--quantity", "4", "--fingerprint", "office-pc-1"]).0 == 0)
        var answer = ""
        let refused = try await eventually(within: .seconds(20), every: .milliseconds(200)) {
            let (status, output) = try await stack.ctl(["validate", key, "--feature", "export"])
            answer = output
            return status == 1 && output.contains("QUOTA_EXCEEDED")
        }
        #expect(refused, "\(answer)")
        let quotas = try await stack.ctl(["quota", "list", license]).1
        #expect(quotas.contains("used 4, EXCEEDED"), "\(quotas)")
        let usage = try await stack.ctl(["usage", "show", license]).1
        #expect(usage.contains("export  4  in 1 events, 0 users, 1 machines; quota 4 of 3 this day — EXCEEDED"), "\(usage)")
        let quotaAlerts = try await stack.ctlJSON(["alerts", "list", license, "--rule", "quota-exceeded"])["alerts"] as? [[String: Any]] ?? []
        #expect(quotaAlerts.count == 1)
    }
}
