import Foundation
import LicensingCore
import LicensingRPC
import LicensingWire

// Calls the gateway answers itself: composite calls that ask several services in
// parallel and merge what comes back, and credential administration.

extension GatewayService {
    /// Every service's health, asked in parallel; a service that does not answer is
    /// reported with its status instead of failing the whole answer.
    func health(_ call: ServerCall) async -> GatewayHealthResponse {
        let parts = await withTaskGroup(of: (Int, ComponentHealth).self) { group in
            for (index, backend) in backends.enumerated() {
                group.addTask {
                    do {
                        // Asked directly, not through the fail-fast gate: this is a health probe too.
                        let health = try await backend.client.call(HealthMethods.check, HealthCheckRequest(), timeout: min(.seconds(2), call.deadline - .now))
                        backend.markUp()
                        return (index, ComponentHealth(name: backend.name, code: .ok, health: health))
                    } catch let error as RPCError {
                        if error.code == .unavailable, !error.fromPeer { backend.markDown() }
                        return (index, ComponentHealth(name: backend.name, code: error.code, message: error.message))
                    } catch {
                        return (index, ComponentHealth(name: backend.name, code: .unavailable, message: "\(error)"))
                    }
                }
            }
            // Each read replica of validation, with its lag and whether it takes calls.
            for (index, replica) in (replicas?.replicas ?? []).enumerated() {
                group.addTask {
                    let name = "validation replica \(replica.endpoint)"
                    do {
                        let health = try await replica.client.call(HealthMethods.check, HealthCheckRequest(), timeout: min(.seconds(2), call.deadline - .now))
                        let rotation = self.replicas?.inRotation(replica) ?? false
                        return (1000 + index, ComponentHealth(
                            name: name, code: .ok, message: rotation ? "" : "out of rotation: \(replica.lag) events behind (or just back)", health: health))
                    } catch let error as RPCError {
                        return (1000 + index, ComponentHealth(name: name, code: error.code, message: error.message))
                    } catch {
                        return (1000 + index, ComponentHealth(name: name, code: .unavailable, message: "\(error)"))
                    }
                }
            }
            var parts: [(Int, ComponentHealth)] = []
            for await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.map(\.1)
        }
        return GatewayHealthResponse(components: [ComponentHealth(name: "gateway", code: .ok, health: await reporter.check())] + parts)
    }

    /// A license with its subscription, machines, seat holders and this month's usage, asked
    /// in parallel; a part whose service is down is missing and says why.
    func licenseOverview(_ request: GetByIdRequest, _ call: ServerCall, _ key: Caller) async throws -> LicenseOverviewResponse {
        guard !request.id.isEmpty else { throw RPCError.invalidArgument("id (the license id) is required") }
        let metadata = call.metadata
        let deadline = call.deadline
        let now = clock.now
        async let license = part("issuance") { try await self.issuance.call(IssuanceMethods.getLicense, GetLicenseRequest(id: request.id), metadata: metadata, deadline: deadline) }
        async let subscription = part("issuance") { try await self.issuance.call(IssuanceMethods.getSubscription, GetByIdRequest(id: request.id), metadata: metadata, deadline: deadline) }
        async let machines = part("validation") { try await self.validation.call(ValidationMethods.listMachines, ListMachinesRequest(licenseId: request.id), metadata: metadata, deadline: deadline) }
        async let seats = part("validation") { try await self.validation.call(ValidationMethods.listSeats, ListSeatsRequest(licenseId: request.id), metadata: metadata, deadline: deadline) }
        async let usage = part("usage") {
            try await self.usage.call(UsageMethods.getUsage, GetUsageRequest(licenseId: request.id, from: now - 30 * 86400, to: now), metadata: metadata, deadline: deadline)
        }
        let (licensePart, subscriptionPart, machinesPart, seatsPart, usagePart) = await (license, subscription, machines, seats, usage)
        if case .failure(let error) = licensePart.result, error.code == .notFound { throw error }
        var parts = [licensePart.status, machinesPart.status, usagePart.status]
        // A license without a subscription is normal, not a failed part.
        if case .failure(let error) = subscriptionPart.result, error.code != .notFound { parts.append(subscriptionPart.status) }
        if case .failure = seatsPart.result { parts.append(seatsPart.status) }
        return LicenseOverviewResponse(
            license: try? licensePart.result.get(), subscription: try? subscriptionPart.result.get(),
            machines: (try? machinesPart.result.get())?.machines ?? [], seats: (try? seatsPart.result.get())?.leases ?? [],
            usage: try? usagePart.result.get(), parts: parts)
    }

    /// GDPR erasure: every service that holds personal data erases this customer's, in
    /// parallel; the answer says what each erased. Running it again erases nothing more.
    func eraseCustomer(_ request: EraseCustomerRequest, _ call: ServerCall, _ key: Caller) async throws -> GatewayEraseCustomerResponse {
        guard !request.customerId.isEmpty else { throw RPCError.invalidArgument("customer_id is required") }
        let metadata = call.metadata
        let deadline = call.deadline
        let results = await withTaskGroup(of: (Int, Part<EraseCustomerResponse>).self) { group in
            for (index, backend) in backends.enumerated() {
                group.addTask {
                    (index, await self.part(backend.name) {
                        try await backend.call(IssuanceMethods.eraseCustomer.renamed(for: backend.name), request, metadata: metadata, deadline: deadline)
                    })
                }
            }
            var results: [(Int, Part<EraseCustomerResponse>)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }.map(\.1)
        }
        return GatewayEraseCustomerResponse(erased: results.compactMap { try? $0.result.get() }, parts: results.map(\.status))
    }

    /// GDPR right of access: issuance answers first (the customer must exist in the caller's
    /// tenant; it names the licenses), then every other service in parallel; one JSON
    /// document, with the services that could not answer listed.
    func exportCustomer(_ request: ExportCustomerRequest, _ call: ServerCall, _ key: Caller) async throws -> GatewayCustomerExport {
        guard !request.customerId.isEmpty else { throw RPCError.invalidArgument("customer_id is required") }
        let metadata = call.metadata
        let deadline = call.deadline
        let own = try await issuance.call(IssuanceMethods.exportCustomer, ExportCustomerRequest(customerId: request.customerId), metadata: metadata, deadline: deadline)
        var licenses: [String] = []
        if let object = try? JSONSerialization.jsonObject(with: Data(own.json)) as? [String: Any], let rows = object["licenses"] as? [[String: Any]] {
            licenses = rows.compactMap { $0["id"] as? String }
        }
        let forwarded = ExportCustomerRequest(customerId: request.customerId, licenseIds: licenses)
        let others = backends.filter { $0.name != "issuance" }
        let results = await withTaskGroup(of: (Int, Part<CustomerExport>).self) { group in
            for (index, backend) in others.enumerated() {
                group.addTask {
                    (index, await self.part(backend.name) {
                        try await backend.call(IssuanceMethods.exportCustomer.renamed(for: backend.name), forwarded, metadata: metadata, deadline: deadline)
                    })
                }
            }
            var results: [(Int, Part<CustomerExport>)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }.map(\.1)
        }
        var services: [String: Any] = [:]
        for export in [own] + results.compactMap({ try? $0.result.get() }) {
            services[export.service] = (try? JSONSerialization.jsonObject(with: Data(export.json))) ?? [:]
        }
        let document: [String: Any] = [
            "customer_id": request.customerId, "tenant_id": key.tenantId, "exported_at": ISODate.format(clock.now), "services": services,
            "missing": results.filter { (try? $0.result.get()) == nil }.map { $0.status.service },
        ]
        let json = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted])).map(Array.init) ?? Array("{}".utf8)
        return GatewayCustomerExport(json: json, parts: results.map(\.status).filter { $0.code != .ok })
    }

    struct Part<T: Sendable>: Sendable {
        let result: Result<T, RPCError>
        let status: PartStatus
    }

    func part<T: Sendable>(_ service: String, _ body: @Sendable () async throws -> T) async -> Part<T> {
        do {
            return Part(result: .success(try await body()), status: PartStatus(service: service, code: .ok))
        } catch let error as RPCError {
            return Part(result: .failure(error), status: PartStatus(service: service, code: error.code, message: error.message))
        } catch {
            let failure = RPCError(.internal, "\(error)")
            return Part(result: .failure(failure), status: PartStatus(service: service, code: .internal, message: failure.message))
        }
    }
}

extension WireMethod {
    /// The same method of another service: every service has its own EraseCustomer.
    func renamed(for service: String) -> WireMethod {
        let method = name.split(separator: "/").last.map(String.init) ?? name
        return WireMethod("licensing.v1.\(service.prefix(1).uppercased())\(service.dropFirst())/\(method)", serverStreaming: serverStreaming)
    }
}
