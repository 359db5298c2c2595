import Foundation
import Testing

/// The committed bindings must be exactly what proto/generate makes from proto/*.proto.
@Suite("Generated code")
struct GeneratedCodeTests {
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // LicensingWireTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    /// protoc, protoc-c and Debian's python3-protobuf (for the Swift plugin).
    static var generatorAvailable: Bool {
        func onPath(_ tool: String) -> Bool {
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
            return path.split(separator: ":").contains {
                FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)")
            }
        }
        guard onPath("protoc"), onPath("protoc-c"),
            FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
        else { return false }
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        python.arguments = ["-c", "import google.protobuf"]
        python.standardOutput = FileHandle.nullDevice
        python.standardError = FileHandle.nullDevice
        do {
            try python.run()
            python.waitUntilExit()
            return python.terminationStatus == 0
        } catch {
            return false
        }
    }

    /// Paths, relative to an output root, of everything proto/generate owns.
    static func generatedFiles(under root: URL) throws -> [String] {
        let fm = FileManager.default
        var files: [String] = []
        let cDir = "Sources/CLicensingProto"
        for name in (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent(cDir).path)) ?? []
        where name.hasSuffix(".pb-c.c") {
            files.append("\(cDir)/\(name)")
        }
        let include = "\(cDir)/include"
        for name in (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent(include).path)) ?? []
        where name.hasSuffix(".pb-c.h") || name == "CLicensingProto.h" {
            files.append("\(include)/\(name)")
        }
        for swiftDir in ["Sources/LicensingWire/Generated", "Sources/LicensingRPCCore/Generated"] {
            for name in (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent(swiftDir).path)) ?? []
            where name.hasSuffix(".swift") {
                files.append("\(swiftDir)/\(name)")
            }
        }
        let python = "sdk/python/licensing_client/_generated"
        for name in (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent(python).path)) ?? [] where name.hasSuffix("_pb2.py") {
            files.append("\(python)/\(name)")
        }
        return files.sorted()
    }

    @Test(
        "committed bindings match proto/generate",
        .enabled(
            "needs protoc, protoc-c on PATH and python3-protobuf for /usr/bin/python3; skipped without them",
            { GeneratedCodeTests.generatorAvailable })
    )
    func committedBindingsAreNotStale() throws {
        let fm = FileManager.default
        let output = fm.temporaryDirectory.appendingPathComponent("lm-generate-\(UUID().uuidString)")
        try fm.createDirectory(at: output, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: output) }

        let generate = Process()
        generate.executableURL = URL(fileURLWithPath: "/bin/bash")
        generate.arguments = [Self.repositoryRoot.appendingPathComponent("proto/generate").path, output.path]
        let log = Pipe()
        generate.standardOutput = log
        generate.standardError = log
        try generate.run()
        let printed = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        generate.waitUntilExit()
        try #require(generate.terminationStatus == 0, "proto/generate failed: \(printed)")

        let produced = try Self.generatedFiles(under: output)
        let committed = try Self.generatedFiles(under: Self.repositoryRoot)
        try #require(!produced.isEmpty, "proto/generate produced nothing under \(output.path)")

        for file in Set(committed).subtracting(produced).sorted() {
            Issue.record("\(file) is committed but proto/generate no longer makes it: remove it or rerun proto/generate")
        }
        for file in produced {
            let fresh = try Data(contentsOf: output.appendingPathComponent(file))
            guard let old = try? Data(contentsOf: Self.repositoryRoot.appendingPathComponent(file)) else {
                Issue.record("\(file) is missing from the repository: run proto/generate")
                continue
            }
            #expect(old == fresh, "\(file) is stale: run proto/generate and commit the result")
        }
    }
}
