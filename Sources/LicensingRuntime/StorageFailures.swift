#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB
import LicensingRPC
import Synchronization

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
            // A file system the kernel turned read-only (after a disk error) fails writes
            // with EROFS, which SQLite reports as an I/O error: say what it is.
            if DatabaseFolders.anyReadOnly {
                return RPCError(
                    .unavailable,
                    "\(method) was not saved: the file system that holds the service's database has turned read-only (the kernel does this after a disk error); check the disk, make it writable, restart the service, and retry")
            }
            return RPCError(.unavailable, "\(method) was not saved: the service's database could not be written (an I/O error); see the server log, then retry")
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return RPCError(.unavailable, "\(method) was not saved: the database is busy; retry")
        default:
            return nil
        }
    }
}

/// The folders this process keeps databases in, so a failed write can tell a read-only
/// file system from other I/O errors.
enum DatabaseFolders {
    private static let folders = Mutex<Set<String>>([])

    static func add(_ databasePath: String) {
        let folder = (databasePath as NSString).deletingLastPathComponent
        folders.withLock { _ = $0.insert(folder.isEmpty ? "." : folder) }
    }

    /// Whether a file can no longer be created in one of them because its file system is
    /// read-only (asked only after a write failed). A file system the kernel made read-only
    /// after an error can keep its read-write mount flags, so creating a file is the test.
    static var anyReadOnly: Bool {
        folders.withLock { $0 }.contains { folder in
            let probe = "\(folder)/.write-probe-\(getpid())"
            let descriptor = open(probe, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            guard descriptor < 0 else {
                close(descriptor)
                unlink(probe)
                return false
            }
            return errno == EROFS
        }
    }
}
