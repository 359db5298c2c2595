import LicensingRPC
import NIOSSL

extension ServiceEnvironment {
    /// A client of another service at the address the setting `name` holds (default: that
    /// service's socket in the data folder). On TCP its calls use TLS: `<prefix>-ca` is the CA
    /// the other service's certificate must chain to, and `<prefix>-cert` with `<prefix>-key`
    /// the certificate this service presents (mutual TLS). Plaintext TCP between services is
    /// refused outside `--dev` unless `allow-plaintext-tcp = true` (a loopback test setup).
    public func peerClient(_ name: String, connections: Int = 2, tlsSettings prefix: String = "peer") throws -> RPCClient {
        try client(of: settings.endpoint(name, default: settings.defaultSocket(name)), named: name, connections: connections, tlsSettings: prefix)
    }

    /// A client of one of validation's read replicas, with the gateway's backend TLS;
    /// `serverName`: the name the replica's certificate carries when the address came from DNS.
    /// A setting that cannot be read was refused when the gateway started (`peerClient`).
    public func replicaClient(_ endpoint: Endpoint, serverName: String?) -> RPCClient {
        do {
            return try client(of: endpoint, named: "validation-replicas", connections: 2, tlsSettings: "backend", serverName: serverName)
        } catch {
            logger.error("cannot make a client for a validation replica", metadata: ["replica": "\(endpoint)", "error": "\(error)"])
            return RPCClient(endpoint: endpoint)
        }
    }

    private func client(of endpoint: Endpoint, named name: String, connections: Int, tlsSettings prefix: String, serverName: String? = nil) throws -> RPCClient {
        var tls: NIOSSLContext?
        if case .tcp = endpoint {
            if let ca = settings["\(prefix)-ca"] {
                tls = try RPCTLS.client(ca: ca, certificateChain: settings["\(prefix)-cert"], privateKey: settings["\(prefix)-key"])
            } else if try !settings.bool("allow-plaintext-tcp", default: developmentMode) {
                throw RPCError.invalidArgument(
                    "\(name) = \(endpoint) is a TCP address: set \(prefix)-ca (and \(prefix)-cert and \(prefix)-key for mutual TLS) so calls to it are encrypted, or allow-plaintext-tcp = true for a loopback test setup")
            }
        }
        return RPCClient(endpoint: endpoint, configuration: RPCClientConfiguration(connections: connections, tls: tls, serverHostname: serverName))
    }
}
