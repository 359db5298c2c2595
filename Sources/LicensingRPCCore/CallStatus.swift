import LicensingWire
import Logging

/// The status a caller gets for what a handler threw, the same over every transport.
package enum CallStatus {
    package static func of(_ error: any Error, method: String, logger: Logger) -> RPCError {
        switch error {
        case let error as RPCError:
            return error
        case is CancellationError:
            return RPCError(.cancelled, "\(method) was cancelled")
        case let known as any RPCStatusConvertible:
            guard let answer = known.rpcError(method: method) else { fallthrough }
            logger.warning("call failed", metadata: ["method": "\(method)", "error": "\(error)", "status": "\(answer.code)"])
            return answer
        default:
            // Internal details stay in the log; the caller learns only that it failed.
            logger.error("call failed", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(.internal, "\(method) failed inside the server; see the server log")
        }
    }

    /// A unary answer as its caller receives it: too late is DEADLINE_EXCEEDED.
    package static func unary(
        _ result: Result<[UInt8], any Error>, method: String, deadline: ContinuousClock.Instant, logger: Logger
    ) -> Result<[UInt8], RPCError> {
        switch result {
        case .success(let payload):
            guard ContinuousClock.now <= deadline else { return .failure(RPCError(.deadlineExceeded, "\(method) finished after its deadline")) }
            return .success(payload)
        case .failure(let error):
            return .failure(of(error, method: method, logger: logger))
        }
    }
}
