#if canImport(Glibc)
import Synchronization
import Glibc
#endif
import NIOCore

// Who calls on a Unix socket, for limits per local process and user.

extension RPCConnectionHandler {
    /// Linux's `struct ucred` (which Glibc's module map hides behind _GNU_SOURCE): three
    /// 32-bit fields in this order, as getsockopt(SO_PEERCRED) fills them.
    fileprivate struct PeerCredentials: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// `unix:uid=1000:pid=4242` from the socket's peer credentials (SO_PEERCRED), read on
    /// the channel's own loop, where the option is answered at once.
    static func localPeer(_ channel: any Channel) -> String {
        guard let provider = channel as? any SocketOptionProvider else { return "unix" }
        let peer = SharedValue("unix")
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: .init(rawValue: SOL_SOCKET), name: .init(rawValue: SO_PEERCRED))
        credentials.whenSuccess { credentials in
            peer.withLock { $0 = "unix:uid=\(credentials.uid):pid=\(credentials.pid)" }
        }
        return peer.withLock { $0 }
    }
}
