import Foundation
import LicensingRPC
import LicensingWire

/// Checks of caller input shared by the services; each failure names the field and what is expected.
public enum Check {
    public static func nonEmpty(_ value: String, _ field: String) throws(RPCError) {
        guard !value.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw .invalidArgument("\(field) is required")
        }
    }

    public static func length(_ value: String, _ field: String, max: Int = 200) throws(RPCError) {
        guard value.count <= max else { throw .invalidArgument("\(field) is longer than \(max) characters") }
    }

    /// Product codes: 2–32 of A–Z, 0–9, '-' and '_'.
    public static func productCode(_ code: String) throws(RPCError) {
        let allowed = code.utf8.allSatisfy { (65...90).contains($0) || (48...57).contains($0) || $0 == 45 || $0 == 95 }
        guard (2...32).contains(code.count), allowed else {
            throw .invalidArgument("code \"\(code)\" must be 2 to 32 characters of A-Z, 0-9, '-' or '_'")
        }
    }

    /// Feature names: 1–64 of letters, digits, '.', '_', ':', '-'.
    public static func features(_ names: [String]) throws(RPCError) {
        for name in names {
            let allowed = name.utf8.allSatisfy {
                (65...90).contains($0) || (97...122).contains($0) || (48...57).contains($0) || $0 == 46 || $0 == 95 || $0 == 58 || $0 == 45
            }
            guard (1...64).contains(name.count), allowed else {
                throw .invalidArgument("feature \"\(name)\" must be 1 to 64 characters of letters, digits, '.', '_', ':' or '-'")
            }
        }
        guard Set(names).count == names.count else { throw .invalidArgument("features contain a duplicate") }
    }

    /// ISO 3166-1 alpha-2 codes, upper case.
    public static func regions(_ codes: [String], _ field: String) throws(RPCError) {
        for code in codes {
            guard code.count == 2, code.utf8.allSatisfy({ (65...90).contains($0) }) else {
                throw .invalidArgument("\(field): \"\(code)\" is not an ISO 3166-1 alpha-2 code such as DE or US")
            }
        }
    }

    /// A caller's stated region: empty, or an ISO 3166-1 alpha-2 code in either case.
    public static func statedRegion(_ code: String) throws(RPCError) {
        guard !code.isEmpty else { return }
        guard code.utf8.count == 2, code.utf8.allSatisfy({ (65...90).contains($0 & 0xDF) }) else {
            throw .invalidArgument("region: \"\(RPCError.quoted(code, limit: 20))\" is not an ISO 3166-1 alpha-2 code such as DE or US")
        }
    }

    public static func nonNegative(_ value: Int64, _ field: String) throws(RPCError) {
        guard value >= 0 else { throw .invalidArgument("\(field) must not be negative") }
    }

    /// A machine fingerprint: 1–1000 characters identifying the machine.
    public static func fingerprint(_ value: String) throws(RPCError) {
        guard (1...1000).contains(value.count) else {
            throw .invalidArgument("fingerprint is required (1 to 1000 characters identifying the machine)")
        }
    }
}
