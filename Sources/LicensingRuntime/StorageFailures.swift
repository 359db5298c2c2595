import GRDB
import LicensingRPC

/// What a caller is told when the database cannot take a write: the cause in words and
/// what to do, with a status a client can act on (retry later), instead of INTERNAL.
/// Reads are unaffected, so validations go on while the disk is full or read-only.
extension DatabaseError: RPCStatusConvertible {
    public func rpcError(method: String) -> RPCError? {
        switch resultCode.primaryResultCode {
        case .SQLITE_FULL:
            return RPCError(
                .resourceExhausted,
                "\(method) was not saved: the disk that holds the service's database is full; free space on it and retry (writes resume by themselves)")
        case .SQLITE_READONLY:
            return RPCError(
                .unavailable,
                "\(method) was not saved: the service's database is read-only (file permissions or a read-only file system); make it writable and retry")
        case .SQLITE_IOERR, .SQLITE_CANTOPEN:
            return RPCError(.unavailable, "\(method) was not saved: the service's database could not be written (an I/O error); see the server log, then retry")
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return RPCError(.unavailable, "\(method) was not saved: the database is busy; retry")
        default:
            return nil
        }
    }
}
