import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One process per service and data folder: a second copy on the same files would take over
/// the sockets and write the same SQLite database. The lock is `flock` on
/// `<data>/<service>.lock`, released by the kernel when the process ends however it ends;
/// the file names the holder's process id for the message a second copy prints.
public final class DataFolderLock: Sendable {
    private let descriptor: Int32
    public let path: String

    public struct Held: Error, CustomStringConvertible {
        public let service: String
        public let folder: String
        public let holder: String

        public var description: String {
            "license-\(service) is already running on the data folder \(folder) (\(holder)); "
                + "stop it first, or give this copy another --data-dir"
        }
    }

    /// Takes the lock or throws ``Held`` naming the running process.
    public init(service: String, folder: String) throws {
        path = "\(folder)/\(service).lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw RuntimeError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let pid = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            throw Held(service: service, folder: folder, holder: pid.isEmpty ? "another process" : "process \(pid)")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = text.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    deinit {
        close(descriptor)
    }
}

/// A start-up failure with a message for the operator.
public struct RuntimeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
