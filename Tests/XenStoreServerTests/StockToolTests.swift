import Foundation
import Testing
import XenCore
import XenStoreProtocol
import XenStoreServer

/// Runs one xenstore-utils tool against `socket`; returns exit status, stdout and stderr.
func runTool(_ tool: String, _ arguments: [String], socket: String) throws -> (status: Int32, out: String, err: String)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/\(tool)")
    process.arguments = arguments
    process.environment = ["XENSTORED_PATH": socket, "PATH": "/usr/bin:/bin"]
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// The stock C tools (libxenstore inside) against the server on a temporary socket. They must run, not skip,
/// in CI: `make setup` installs xenstore-utils.
@Suite(.serialized) struct StockToolTests {
    static var toolsInstalled: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/xenstore-read") }

    /// A server with a dom0 socket and a domain-5 socket (to see what unprivileged tools get).
    func withServer(_ body: (XenStoreServer, String, String) async throws -> Void) async throws {
        guard Self.toolsInstalled else {
            // Never a silent skip: `make setup` (run by `make test`) installs xenstore-utils.
            Issue.record("xenstore-utils is not installed: run `make setup`")
            return
        }
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = XenStoreServer()
        let dom0 = try await server.listen(unixSocketPath: directory.socket)
        let dom5Path = directory.path + "/dom5"
        let dom5 = try await server.listen(unixSocketPath: dom5Path, domain: 5)
        do {
            try await body(server, directory.socket, dom5Path)
        } catch {
            await dom0.close()
            await dom5.close()
            throw error
        }
        await dom0.close()
        await dom5.close()
    }

    @Test func writeReadListLsExistsRm() async throws {
        try await withServer { server, socket, _ in
            var result = try runTool("xenstore-write", ["/a/b", "v", "/a/c", "w w"], socket: socket)
            #expect(result.status == 0)
            #expect(server.value(at: "/a/b") == Array("v".utf8))
            result = try runTool("xenstore-read", ["/a/b"], socket: socket)
            #expect(result.status == 0 && result.out == "v\n")
            result = try runTool("xenstore-list", ["/a"], socket: socket)
            #expect(result.status == 0 && result.out == "b\nc\n")
            result = try runTool("xenstore-ls", ["/a"], socket: socket)
            #expect(result.status == 0 && result.out == "b = \"v\"\nc = \"w w\"\n")
            result = try runTool("xenstore-ls", ["-f", "/a"], socket: socket)
            #expect(result.out == "/a/b = \"v\"\n/a/c = \"w w\"\n")
            result = try runTool("xenstore-exists", ["/a/b"], socket: socket)
            #expect(result.status == 0)
            result = try runTool("xenstore-exists", ["/a/nope"], socket: socket)
            #expect(result.status == 1)
            result = try runTool("xenstore-rm", ["/a/b"], socket: socket)
            #expect(result.status == 0)
            #expect(server.value(at: "/a/b") == nil)
            result = try runTool("xenstore-list", ["/a"], socket: socket)
            #expect(result.out == "c\n")
        }
    }

    @Test func readOfAMissingNodeFails() async throws {
        try await withServer { _, socket, _ in
            let result = try runTool("xenstore-read", ["/no/such/node"], socket: socket)
            #expect(result.status == 1)
            #expect(result.err.contains("couldn't read path /no/such/node"))
            #expect(result.out.isEmpty)
        }
    }

    @Test func rmBelowAMissingParentFailsAndInvalidPathsFail() async throws {
        try await withServer { _, socket, _ in
            var result = try runTool("xenstore-rm", ["/missing/child"], socket: socket)
            #expect(result.status == 1)
            result = try runTool("xenstore-write", ["/top", "x"], socket: socket)
            result = try runTool("xenstore-rm", ["/top/absent"], socket: socket)
            #expect(result.status == 0)
            result = try runTool("xenstore-read", ["/a//b"], socket: socket)
            #expect(result.status == 1)
            result = try runTool("xenstore-write", ["/bad path", "x"], socket: socket)
            #expect(result.status == 1)
        }
    }

    @Test func chmodSetsPermissionsAndAnUnprivilegedToolGetsEACCES() async throws {
        try await withServer { server, socket, dom5 in
            _ = try runTool("xenstore-write", ["/vm/secret", "s", "/vm/shared", "x"], socket: socket)
            var result = try runTool("xenstore-chmod", ["/vm/shared", "n0", "r5"], socket: socket)
            #expect(result.status == 0)
            #expect(
                server.permissions(at: "/vm/shared")
                    == XenStorePermissions(owner: 0, others: .none, acl: [.init(.read, 5)]))
            result = try runTool("xenstore-ls", ["-p", "/vm"], socket: socket)
            #expect(result.out.contains("(n0,r5)"))
            // Domain 5 may read /vm/shared but not /vm/secret, and may not write either.
            result = try runTool("xenstore-read", ["/vm/shared"], socket: dom5)
            #expect(result.status == 0 && result.out == "x\n")
            result = try runTool("xenstore-read", ["/vm/secret"], socket: dom5)
            #expect(result.status == 1)
            #expect(result.err.contains("couldn't read path"))
            result = try runTool("xenstore-write", ["/vm/shared", "y"], socket: dom5)
            #expect(result.status == 1)
            #expect(result.err.contains("Permission denied") || result.err.contains("could not write"))
            result = try runTool("xenstore-exists", ["/vm/secret"], socket: dom5)
            #expect(result.status == 1)
            result = try runTool("xenstore-chmod", ["/vm/shared", "b5"], socket: dom5)
            #expect(result.status == 1)
            #expect(server.value(at: "/vm/shared") == Array("x".utf8))
            // Relative paths of a domain-5 tool land in its home.
            _ = try runTool("xenstore-write", ["/local/domain/5", ""], socket: socket)
            _ = try runTool("xenstore-chmod", ["/local/domain/5", "n5"], socket: socket)
            result = try runTool("xenstore-write", ["name", "guest5"], socket: dom5)
            #expect(result.status == 0)
            #expect(server.value(at: "/local/domain/5/name") == Array("guest5".utf8))
        }
    }

    @Test func watchSeesRegistrationAndChange() async throws {
        try await withServer { _, socket, _ in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/xenstore-watch")
            process.arguments = ["-n", "2", "/watched"]
            process.environment = ["XENSTORED_PATH": socket]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            // The first line is the registration event; only then is the watch certainly in place.
            var text = ""
            while !text.contains("\n") {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { break }
                text += String(decoding: data, as: UTF8.self)
            }
            #expect(text == "/watched\n")
            let result = try runTool("xenstore-write", ["/watched/child", "1"], socket: socket)
            #expect(result.status == 0)
            text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            #expect(text == "/watched\n/watched/child\n")
        }
    }
}
