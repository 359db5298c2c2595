#if canImport(Glibc)
import Glibc
#endif
import LicensingRPC
import LicensingTestSupport
import NIOCore
import NIOPosix
import Testing

extension RPCTests {
    /// The options the client's sockets get. A socket-level option with a TCP option's number
    /// once set SO_DEBUG on every connection (and never TCP_NODELAY): only root may set it, so
    /// services running as their own users could not call each other over Unix sockets.
    @Suite struct SocketOptionsTests {
        @Test(arguments: Transport.allCases)
        func connectionsGetNoDebugAndTCPGetsNoDelay(_ transport: Transport) async throws {
            let folder = TemporaryFolder()
            try await withServer(RPCRouter(), on: [transport.endpoint(in: folder)]) { endpoints in
                let channel = try await RPCClient.openChannel(
                    to: endpoints[0], configuration: RPCClientConfiguration(), on: MultiThreadedEventLoopGroup.singleton.next()
                ) { _ in }.get()
                defer { channel.close(promise: nil) }
                let debug = try await channel.getOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_DEBUG))).get()
                #expect(debug == 0, "SO_DEBUG is set")
                if transport == .tcp {
                    #expect(try await channel.getOption(.tcpOption(.tcp_nodelay)).get() != 0, "TCP_NODELAY is not set")
                }
            }
        }
    }
}
