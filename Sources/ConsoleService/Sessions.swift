import Synchronization
import Crypto
import Foundation
import LicensingWire

/// Who a browser session belongs to.
enum SessionSubject: Sendable {
    /// Not signed in yet: the session exists so that the sign-in forms carry a CSRF token.
    case anonymous
    case `operator`(OperatorIdentity)
    case holder(HolderIdentity)
}

/// An operator signed in with their own API key. The key is held in memory only, for the
/// calls the console makes on their behalf; what the role may call comes from the gateway.
struct OperatorIdentity: Sendable {
    let apiKey: String
    let key: ApiKey
    let allowed: Set<String>

    func may(_ method: WireMethodInfo) -> Bool { allowed.contains(method.name) }
    func may<Request, Response>(_ method: WireMethod<Request, Response>) -> Bool { allowed.contains(method.name) }
}

/// A license holder, with the short-lived token the gateway signed them in with.
struct HolderIdentity: Sendable {
    let token: String
    let expiresAt: Int64
    let licenseID: String
    let customerID: String
}

struct ConsoleSession: Sendable {
    let id: String
    let csrf: String
    var subject: SessionSubject
    let createdAt: ContinuousClock.Instant
    var lastSeen: ContinuousClock.Instant
    /// A one-time message for the next page ("Machine deactivated").
    var notice: String?
}

/// Sessions live in memory only: they hold operators' API keys and holders' tokens, which
/// must never reach a disk, and losing them on a restart costs one sign-in. A session ends
/// after 30 idle minutes, 8 hours in all, when its holder token expires, or on sign-out.
public final class SessionStore: Sendable {
    static let cookie = "lm_session"
    let idleTimeout: Duration
    let absoluteTimeout: Duration
    private let sessions = Mutex<[String: ConsoleSession]>([:])
    static let maxSessions = 100_000

    public init(idleTimeout: Duration = .seconds(30 * 60), absoluteTimeout: Duration = .seconds(8 * 3600)) {
        self.idleTimeout = idleTimeout
        self.absoluteTimeout = absoluteTimeout
    }

    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// A new session; on sign-in the anonymous one is replaced (a new id, so a session id
    /// planted before sign-in is worth nothing after).
    func create(_ subject: SessionSubject, replacing old: String? = nil) -> ConsoleSession {
        let now = ContinuousClock.now
        let session = ConsoleSession(id: Self.randomToken(), csrf: Self.randomToken(), subject: subject, createdAt: now, lastSeen: now)
        sessions.withLock { sessions in
            if let old { sessions[old] = nil }
            if sessions.count >= Self.maxSessions { sweep(&sessions, now: now) }
            if sessions.count >= Self.maxSessions, let oldest = sessions.values.min(by: { $0.lastSeen < $1.lastSeen }) { sessions[oldest.id] = nil }
            sessions[session.id] = session
        }
        return session
    }

    /// The live session with this id, touched; nil when unknown or expired.
    func find(_ id: String?, nowSeconds: Int64) -> ConsoleSession? {
        guard let id, id.utf8.count == 64 else { return nil }
        let now = ContinuousClock.now
        return sessions.withLock { sessions in
            guard var session = sessions[id] else { return nil }
            if expired(session, now: now, nowSeconds: nowSeconds) {
                sessions[id] = nil
                return nil
            }
            session.lastSeen = now
            sessions[id] = session
            return session
        }
    }

    func end(_ id: String) {
        _ = sessions.withLock { $0.removeValue(forKey: id) }
    }

    func setNotice(_ id: String, _ notice: String?) {
        sessions.withLock { $0[id]?.notice = notice }
    }

    /// Takes the one-time notice.
    func takeNotice(_ id: String) -> String? {
        sessions.withLock { sessions in
            defer { sessions[id]?.notice = nil }
            return sessions[id]?.notice
        }
    }

    var count: Int { sessions.withLock { $0.count } }

    func sweep() {
        let now = ContinuousClock.now
        sessions.withLock { sweep(&$0, now: now) }
    }

    private func sweep(_ sessions: inout [String: ConsoleSession], now: ContinuousClock.Instant) {
        let seconds = Int64(Date().timeIntervalSince1970)
        sessions = sessions.filter { !expired($0.value, now: now, nowSeconds: seconds) }
    }

    private func expired(_ session: ConsoleSession, now: ContinuousClock.Instant, nowSeconds: Int64) -> Bool {
        if now - session.lastSeen > idleTimeout || now - session.createdAt > absoluteTimeout { return true }
        if case .holder(let holder) = session.subject, holder.expiresAt <= nowSeconds { return true }
        return false
    }

    /// Constant-time comparison of a form's CSRF token with the session's.
    static func sameToken(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count, !x.isEmpty else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
