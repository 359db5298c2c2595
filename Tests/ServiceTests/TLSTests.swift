import Foundation
@testable import GatewayService
import IssuanceService
import LicensingCore
import LicensingRPC
import LicensingWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import LicensingTestSupport
import Testing

/// Certificates made by deploy/make-certs in a temporary folder.
struct TestCertificates {
    let folder: String

    init(_ root: TemporaryFolder, name: String = "tls") throws {
        folder = "\(root.path)/\(name)"
        try makeCertificates(in: folder)
    }

    var ca: String { "\(folder)/ca.pem" }
    func server() throws -> NIOSSLContext { try RPCTLS.server(certificateChain: "\(folder)/server.pem", privateKey: "\(folder)/server.key") }
    func client(withCertificate: Bool = false) throws -> NIOSSLContext {
        withCertificate
            ? try RPCTLS.client(ca: ca, certificateChain: "\(folder)/client.pem", privateKey: "\(folder)/client.key")
            : try RPCTLS.client(ca: ca)
    }
}

@Suite struct TLSTests {
    func health(_ endpoint: Endpoint, tls: NIOSSLContext?, key: String) async -> StatusCode {
        let client = RPCClient(endpoint: endpoint, configuration: .init(connections: 1, connectTimeout: .seconds(2), tls: tls, metadata: [RPCMetadata.apiKey: key]))
        defer { Task { await client.close() } }
        do {
            _ = try await client.call(GatewayMethods.health, HealthCheckRequest(), timeout: .seconds(3))
            return .ok
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    @Test func theGatewayServesTLSAndRefusesWrongCAsAndPlaintext() async throws {
        let folder = TemporaryFolder()
        let certificates = try TestCertificates(folder)
        let stranger = try TestCertificates(folder, name: "other-ca")
        try await withGateway(folder: folder, tls: try certificates.server()) { gateway in
            let tcp = try #require(gateway.tcp)
            let key = try await gateway.key(.admin)
            #expect(await health(tcp, tls: try certificates.client(), key: key) == .ok)
            // A client that does not trust the gateway's CA refuses it, and says why.
            #expect(await health(tcp, tls: try stranger.client(), key: key) == .unavailable)
            let untrusting = RPCClient(endpoint: tcp, configuration: .init(connections: 1, connectTimeout: .seconds(2), tls: try stranger.client(), metadata: [RPCMetadata.apiKey: key]))
            do {
                _ = try await untrusting.call(GatewayMethods.health, HealthCheckRequest(), timeout: .seconds(10))
                Issue.record("a client that does not trust the CA was answered")
            } catch let error as RPCError {
                #expect(error.message.hasPrefix("the server's TLS certificate was not trusted"), "\(error.message)")
            }
            await untrusting.close()
            // A plaintext client gets nothing from the TLS port.
            #expect(await health(tcp, tls: nil, key: key) != .ok)

            // Plaintext bytes on the TLS port neither crash nor hang the gateway.
            guard case .tcp(let host, let port) = tcp else { return }
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: host, port: port).get()
            var garbage = channel.allocator.buffer(capacity: 64)
            garbage.writeBytes([0, 0, 0, 10] + Array("not a TLS handshake".utf8))
            try await channel.writeAndFlush(garbage)
            let closed = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { try await channel.closeFuture.get(); return true }
                group.addTask { try await Task.sleep(for: .seconds(5)); return false }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            #expect(closed, "the gateway left a plaintext connection open on its TLS port")
            #expect(await health(tcp, tls: try certificates.client(), key: key) == .ok)
            #expect(await health(gateway.endpoint, tls: nil, key: key) == .ok)
        }
    }

    /// Services on TCP can require the gateway's client certificate.
    @Test func mutualTLSBetweenTheGatewayAndAService() async throws {
        let folder = TemporaryFolder()
        let certificates = try TestCertificates(folder)
        let issuance = try IssuanceService(
            database: try IssuanceService.openDatabase(path: "\(folder.path)/issuance.sqlite"), keyHashSecret: testSecret,
            masterKey: testMasterKey, logger: Logger(label: "test"))
        let mutual = try RPCTLS.server(certificateChain: "\(certificates.folder)/server.pem", privateKey: "\(certificates.folder)/server.key", clientCA: certificates.ca)
        let server = RPCServer(
            router: issuance.router(), configuration: RPCServerConfiguration(endpoints: [.tcp(host: "127.0.0.1", port: 0)], tls: mutual),
            logger: Logger(label: "test.issuance"))
        let running = Task { try await server.run() }
        defer { running.cancel() }
        let endpoint = try await server.listeningEndpoints[0]

        let withCertificate = RPCClient(endpoint: endpoint, configuration: .init(connections: 1, tls: try certificates.client(withCertificate: true)))
        let withoutCertificate = RPCClient(endpoint: endpoint, configuration: .init(connections: 1, tls: try certificates.client()))
        _ = try await withCertificate.call(HealthMethods.check, HealthCheckRequest())
        await #expect(throws: RPCError.self) { _ = try await withoutCertificate.call(HealthMethods.check, HealthCheckRequest(), timeout: .seconds(3)) }
        await withCertificate.close()
        await withoutCertificate.close()
    }
}
