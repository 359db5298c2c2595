import Foundation
import LicensingCore
import Testing

@Suite struct LicenseKeyTests {
    /// The bits identify the key however it was typed, and differ between keys.
    @Test func bitsIdentifyTheKeyHoweverItWasTyped() throws {
        let key = LicenseKey.generate()
        let retyped = try LicenseKey(parsing: key.description.lowercased().replacingOccurrences(of: "-", with: " "))
        #expect(retyped.bits == key.bits)
        var seen = Set<UInt128>()
        for _ in 0..<10_000 { seen.insert(LicenseKey.generate().bits) }
        #expect(seen.count == 10_000)
    }

    @Test func generatedKeysParseBackAndLookAsDocumented() throws {
        for _ in 0..<200 {
            let key = LicenseKey.generate()
            let text = key.description
            #expect(text.count == 34)
            #expect(text.split(separator: "-").map(\.count) == [4, 4, 4, 4, 4, 4, 4])
            #expect(try LicenseKey(parsing: text) == key)
        }
    }

    @Test func keysAreUnique() {
        let keys = Set((0..<5000).map { _ in LicenseKey.generate().canonical })
        #expect(keys.count == 5000)
    }

    @Test func typingVariantsAreAccepted() throws {
        let key = LicenseKey.generate()
        let sloppy = key.description.lowercased().replacingOccurrences(of: "-", with: " ")
        #expect(try LicenseKey(parsing: sloppy) == key)
        // Crockford: O reads as 0, I and L as 1.
        let confusable = key.canonical.replacingOccurrences(of: "0", with: "O").replacingOccurrences(of: "1", with: "I")
        #expect(try LicenseKey(parsing: confusable) == key)
    }

    @Test func everySingleMistypedSymbolIsCaught() throws {
        let key = LicenseKey.generate()
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var symbols = Array(key.canonical)
        for position in 1..<symbols.count {
            let original = symbols[position]
            for replacement in alphabet where replacement != original {
                symbols[position] = replacement
                #expect(throws: LicenseKeyError.self) { try LicenseKey(parsing: String(symbols)) }
            }
            symbols[position] = original
        }
    }

    @Test func badInputGetsClearErrors() {
        #expect(throws: LicenseKeyError.wrongLength(3)) { try LicenseKey(parsing: "ABC") }
        #expect(throws: LicenseKeyError.invalidSymbol("U")) { try LicenseKey(parsing: "1UUU-0000") }
        #expect(throws: LicenseKeyError.unknownVersion) { try LicenseKey(parsing: "2" + String(repeating: "0", count: 27)) }
        #expect(throws: LicenseKeyError.self) { try LicenseKey(parsing: "") }
    }

    @Test func hashIsKeyedAndStable() throws {
        let key = LicenseKey.generate()
        let secretA = try KeyHashSecret(bytes: Array(repeating: 1, count: 32))
        let secretB = try KeyHashSecret(bytes: Array(repeating: 2, count: 32))
        #expect(key.hash(secret: secretA) == key.hash(secret: secretA))
        #expect(key.hash(secret: secretA) != key.hash(secret: secretB))
        #expect(key.hash(secret: secretA).count == 64)
        #expect(!key.hash(secret: secretA).contains(key.canonical.lowercased()))
        #expect(throws: KeyHashSecretError.self) { try KeyHashSecret(bytes: [1, 2, 3]) }
    }
}

@Suite struct LicenseKeyCollisionTests {
    @Test func aMillionKeysHaveNoCollision() {
        var seen = Set<String>(minimumCapacity: 1_000_000)
        for _ in 0..<1_000_000 {
            seen.insert(LicenseKey.generate().canonical)
        }
        #expect(seen.count == 1_000_000)
    }
}
