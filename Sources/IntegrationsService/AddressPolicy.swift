import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where outbound webhooks may go. An endpoint URL is resolved here, each address checked,
/// and the delivery connects to the address that passed (the HTTP client is told to use it
/// for the host name), so a name that resolves elsewhere on the next look-up cannot steer a
/// delivery inside the network. Loopback, private, shared, link-local, unique-local,
/// multicast, unspecified and IPv4-mapped or -translated addresses are refused, however the
/// URL writes them (decimal `2130706433`, octal `0177.0.0.1` and such resolve to what they
/// mean before the check) — unless the setting allows them (tests; never production).
struct AddressPolicy: Sendable {
    let allowPrivate: Bool

    enum Refusal: Error, CustomStringConvertible, Equatable {
        case badURL(String)
        case unresolvable(String)
        case forbidden(String, String)

        var description: String {
            switch self {
            case .badURL(let why): why
            case .unresolvable(let host): "\(host) does not resolve"
            case .forbidden(let host, let address):
                "\(host) resolves to \(address), an address inside a private network or this machine; webhooks go to public addresses only"
            }
        }
    }

    /// A URL an endpoint may have: http(s), a host, no user or password, at most 2,000 characters.
    static func check(url text: String) throws(Refusal) -> URL {
        guard text.count <= 2000, let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http" else {
            throw .badURL("the URL must be an http:// or https:// URL of at most 2000 characters")
        }
        guard let host = url.host, !host.isEmpty else { throw .badURL("the URL has no host") }
        guard url.user == nil, url.password == nil else { throw .badURL("the URL must not carry a user or password") }
        return url
    }

    /// The address a delivery to `host` connects to.
    func address(for host: String) throws(Refusal) -> String {
        let addresses = Self.resolve(host)
        guard !addresses.isEmpty else { throw .unresolvable(host) }
        if allowPrivate { return addresses[0].text }
        guard let allowed = addresses.first(where: { !$0.isForbidden }) else { throw .forbidden(host, addresses[0].text) }
        return allowed.text
    }

    struct Address {
        let bytes: [UInt8]
        let text: String

        var isForbidden: Bool {
            if bytes.count == 4 { return Self.forbiddenV4(bytes) }
            let b = bytes
            if b.allSatisfy({ $0 == 0 }) { return true }  // ::
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }  // ::1
            if b[0] & 0xFE == 0xFC { return true }  // fc00::/7 unique local
            if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return true }  // fe80::/10 link-local
            if b[0] == 0xFE && b[1] & 0xC0 == 0xC0 { return true }  // fec0::/10 site-local
            if b[0] == 0xFF { return true }  // multicast
            if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return true }  // ::ffff:0:0/96 IPv4-mapped
            if b[0..<12].allSatisfy({ $0 == 0 }) { return true }  // ::/96 IPv4-compatible
            if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B { return true }  // 64:ff9b::/96 NAT64
            if b[0] == 0x20 && b[1] == 0x02 { return Self.forbiddenV4(Array(b[2..<6])) }  // 6to4 carries an IPv4 address
            return false
        }

        static func forbiddenV4(_ a: [UInt8]) -> Bool {
            switch (a[0], a[1]) {
            case (0, _), (10, _), (127, _): true
            case (100, 64...127): true  // shared address space
            case (169, 254): true  // link-local, cloud metadata
            case (172, 16...31), (192, 168): true
            case (192, 0) where a[2] == 0 || a[2] == 2: true
            case (198, 18...19): true  // benchmarking
            case (198, 51) where a[2] == 100: true
            case (203, 0) where a[2] == 113: true
            case (224...255, _): true  // multicast, reserved, broadcast
            default: false
            }
        }
    }

    /// Every address the host name resolves to (a literal address resolves to itself).
    static func resolve(_ host: String) -> [Address] {
        let name = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(list) }
        var addresses: [Address] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            if let sockaddr = entry.pointee.ai_addr {
                var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                if entry.pointee.ai_family == AF_INET {
                    var address = sockaddr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                    let bytes = withUnsafeBytes(of: &address) { Array($0) }
                    inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count))
                    addresses.append(Address(bytes: bytes, text: String(cString: buffer)))
                } else if entry.pointee.ai_family == AF_INET6 {
                    var address = sockaddr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                    let bytes = withUnsafeBytes(of: &address) { Array($0) }
                    inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
                    addresses.append(Address(bytes: bytes, text: String(cString: buffer)))
                }
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }
}
