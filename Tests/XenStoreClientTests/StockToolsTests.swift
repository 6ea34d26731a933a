import Foundation
import Testing
import XenStoreClient
import XenStoreServer

/// The client next to libxenstore's stock tools (xenstore-utils) on one server socket: each sees what the
/// other wrote, and a `wait` wakes for a write made by `xenstore-write`.
@Suite struct StockToolsTests {
    /// Runs a stock tool with `XENSTORED_PATH` pointing at the rig's socket; nil if the tool is missing
    /// (then the test fails under CI=true, where `make setup` installs xenstore-utils).
    private func run(_ tool: String, _ arguments: [String], socket: String) throws -> (Int32, String)? {
        let path = "/usr/bin/\(tool)"
        guard FileManager.default.isExecutableFile(atPath: path) else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ["XENSTORED_PATH": socket]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func clientAndXenstoreUtilsShareTheStore() async throws {
        let rig = try await ServerRig(.unixSocket)
        guard let _ = try run("xenstore-write", ["/stock/probe", "1"], socket: rig.socketPath) else {
            #expect(ProcessInfo.processInfo.environment["CI"] != "true", "xenstore-utils missing under CI")
            await rig.shutDown()
            return
        }
        let transport = try XenStoreClient.openDefaultTransport(environment: ["XENSTORED_PATH": rig.socketPath])
        let client = XenStoreClient(transport: transport)
        try await client.immediate { h in try await h.write("/stock/from-swift", "swift value") }
        let read = try run("xenstore-read", ["/stock/from-swift"], socket: rig.socketPath)
        #expect(read?.0 == 0 && read?.1 == "swift value\n")

        let waiting = Task {
            try await client.wait { h in
                guard let value = try? await h.read("/stock/from-c"), !value.isEmpty else { throw XenStoreError.again }
                return value
            }
        }
        let write = try run("xenstore-write", ["/stock/from-c", "c value"], socket: rig.socketPath)
        #expect(write?.0 == 0)
        #expect(try await waiting.value == "c value")
        await client.close()
        await rig.shutDown()
    }
}
