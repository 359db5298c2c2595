import NIOSSL

/// TLS contexts from PEM files: TLS 1.2 or newer only.
public enum RPCTLS {
    /// A server's context; with `clientCA`, clients must present a certificate it signed (mutual TLS).
    public static func server(certificateChain: String, privateKey: String, clientCA: String? = nil) throws -> NIOSSLContext {
        var configuration = try serverConfiguration(certificateChain: certificateChain, privateKey: privateKey)
        if let clientCA {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
        }
        return try NIOSSLContext(configuration: configuration)
    }

    /// The settings every TLS listener of the project uses (TLS 1.2 and later), for servers
    /// built on other stacks (the integrations HTTP listener).
    public static func serverConfiguration(certificateChain: String, privateKey: String) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateChain).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: privateKey, format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        return configuration
    }

    /// A client's context trusting `ca` (nil = the system's roots); with a certificate and
    /// key, it presents them for mutual TLS.
    public static func client(ca: String?, certificateChain: String? = nil, privateKey: String? = nil) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let ca {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        }
        if let certificateChain, let privateKey {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateChain).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKey, format: .pem))
        }
        return try NIOSSLContext(configuration: configuration)
    }
}
