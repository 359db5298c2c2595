import LicensingRPC
import LicensingWire

/// The console's one way into the system: the gateway, over the project's RPC protocol,
/// with the signed-in person's credential (an operator's API key or a holder token), the
/// console's own CONSOLE key, and the person's address (so the gateway's failed sign-in
/// limits count per person, not per console).
struct ConsoleGateway: Sendable {
    let client: RPCClient
    let consoleKey: String
    static let timeout: Duration = .seconds(10)

    func call<Request, Response>(
        _ method: WireMethod<Request, Response>, _ request: Request, credential: String?, address: String
    ) async throws -> Response {
        var metadata = RPCMetadata()
        if let credential { metadata[RPCMetadata.apiKey] = credential }
        metadata[RPCMetadata.consoleKey] = consoleKey
        metadata[RPCMetadata.endUserAddress] = address
        return try await client.call(method, request, metadata: metadata, timeout: Self.timeout)
    }

    /// As `call`, for a part of a page: the error instead of a throw, so the rest renders.
    func part<Request, Response>(
        _ method: WireMethod<Request, Response>, _ request: Request, credential: String?, address: String
    ) async -> Result<Response, RPCError> {
        do {
            return .success(try await call(method, request, credential: credential, address: address))
        } catch let error as RPCError {
            return .failure(error)
        } catch {
            return .failure(RPCError(.unavailable, "\(error)"))
        }
    }
}

extension RPCError {
    /// The sentence a page shows when a call failed.
    var sentence: String {
        switch code {
        case .unavailable: "This part cannot be shown right now: the service behind it is not answering. Try again in a moment."
        case .permissionDenied: "Your role may not do this."
        case .unauthenticated: message
        case .resourceExhausted: "Too many attempts: wait a minute and try again."
        case .deadlineExceeded: "The system took too long to answer; try again."
        default: message
        }
    }
}
