import LicensingRPC
import NIOSSL

extension ServiceEnvironment {
    /// A client of another service at the address the setting `name` holds (default: that
    /// service's socket in the data folder). On TCP its calls use TLS: `<prefix>-ca` is the CA
    /// the other service's certificate must chain to, and `<prefix>-cert` with `<prefix>-key`
    /// the certificate this service presents (mutual TLS). Plaintext TCP between services is
    /// refused outside `--dev` unless `allow-plaintext-tcp = true` (a loopback test setup).
    public func peerClient(_ name: String, connections: Int = 2, tlsSettings prefix: String = "peer") throws -> RPCClient {
        let endpoint = try settings.endpoint(name, default: settings.defaultSocket(name))
        var tls: NIOSSLContext?
        if case .tcp = endpoint {
            if let ca = settings["\(prefix)-ca"] {
                tls = try RPCTLS.client(ca: ca, certificateChain: settings["\(prefix)-cert"], privateKey: settings["\(prefix)-key"])
            } else if try !settings.bool("allow-plaintext-tcp", default: developmentMode) {
                throw RPCError.invalidArgument(
                    "\(name) = \(endpoint) is a TCP address: set \(prefix)-ca (and \(prefix)-cert and \(prefix)-key for mutual TLS) so calls to it are encrypted, or allow-plaintext-tcp = true for a loopback test setup")
            }
        }
        return RPCClient(endpoint: endpoint, configuration: RPCClientConfiguration(connections: connections, tls: tls))
    }
}
