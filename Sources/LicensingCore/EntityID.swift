/// Identifiers of stored things: a type prefix and 80 random bits in lower-case Crockford
/// base32, e.g. `lic_8m4kq2x9v1c0tzpr`. The prefix tells a support engineer what an id names.
public enum EntityID {
    public static func make(_ prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")
        var out = prefix + "_"
        for _ in 0..<16 {
            out.append(alphabet[Int(generator.next(upperBound: UInt8(32)))])
        }
        return out
    }
}
