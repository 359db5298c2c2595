@testable import ConsoleService
import Foundation
import LicensingWire
import Testing

/// Console sessions end when idle, at their absolute limit, with the holder's token, or on
/// sign-out; a sign-in replaces the anonymous session's id.
@Suite struct ConsoleSessionTests {
    @Test func sessionsExpireAndEnd() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let sessions = SessionStore(idleTimeout: .milliseconds(200), absoluteTimeout: .seconds(3600))
        let anonymous = sessions.create(.anonymous)
        #expect(sessions.find(anonymous.id, nowSeconds: now) != nil)
        let holder = sessions.create(.holder(HolderIdentity(token: "lmh_x", expiresAt: now + 60, licenseID: "lic_1", customerID: "")), replacing: anonymous.id)
        #expect(holder.id != anonymous.id && holder.csrf != anonymous.csrf)
        #expect(sessions.find(anonymous.id, nowSeconds: now) == nil, "the pre-sign-in id is gone")
        #expect(sessions.find(holder.id, nowSeconds: now) != nil)
        // The holder token's end ends the session.
        #expect(sessions.find(holder.id, nowSeconds: now + 61) == nil)
        // Idle too long.
        let idle = sessions.create(.anonymous)
        try await Task.sleep(for: .milliseconds(400))
        #expect(sessions.find(idle.id, nowSeconds: now) == nil)
        // Ended by sign-out.
        let ended = sessions.create(.anonymous)
        sessions.end(ended.id)
        #expect(sessions.find(ended.id, nowSeconds: now) == nil)
        // Forged ids and tokens.
        #expect(sessions.find("not-a-session", nowSeconds: now) == nil)
        #expect(!SessionStore.sameToken("", ""))
        #expect(!SessionStore.sameToken(ended.csrf, idle.csrf) && !SessionStore.sameToken(ended.csrf, String(ended.csrf.dropLast())))
        #expect(SessionStore.sameToken(ended.csrf, ended.csrf))
    }

    @Test func chartsAndCSVCellsAreEscaped() {
        let svg = BarChart.svg([BarChart.Bar(label: "<script>alert(1)</script>", value: 3)], title: "A \"title\" & more")
        #expect(svg.contains("&lt;script&gt;") && !svg.contains("<script>") && svg.contains("A &quot;title&quot; &amp; more"))
        #expect(ConsoleService.csvField("=HYPERLINK(\"x\")") == "\"'=HYPERLINK(\"\"x\"\")\"")
        #expect(ConsoleService.csvField("Gamma, Inc.") == "\"Gamma, Inc.\"")
    }
}
