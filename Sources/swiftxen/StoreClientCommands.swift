import ArgumentParser
import Foundation
import XenStoreClient

// `swiftxen store read|write|ls|rm|mkdir|chmod|watch|exists`: xenstore-utils' commands over XenStoreClient,
// with the same output shapes, against the default xenstored path (as libxenstore picks it) or `--socket`.

/// Where to connect: `--socket PATH`, or libxenstore's choice.
struct StoreConnectionOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "xenstored unix socket (default: XENSTORED_PATH, XENSTORED_RUNDIR/socket, /var/run/xenstored/socket, then /dev/xen/xenbus)"
    )
    var socket: String?

    func withClient<T>(_ body: (XenStoreClient) async throws -> T) async throws -> T {
        let client: XenStoreClient
        if let socket {
            client = try await XenStoreClient.connect(socketPath: socket)
        } else {
            client = try await XenStoreClient.make()
        }
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}

/// Prints like xenstore-utils: `<command>: <error>` on stderr, exit status 1.
func storeFailure(_ command: String, _ error: any Error) -> ExitCode {
    FileHandle.standardError.write(Data("xenstore-\(command): \(error)\n".utf8))
    return ExitCode(1)
}

/// `xenstore-read`: prints each value on its own line.
struct StoreClientRead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read", abstract: "Print the values of xenstore nodes.")
    @OptionGroup var connection: StoreConnectionOptions
    @Flag(name: .short, help: "Prefix each value with its path (`path: value`).") var prefix = false
    @Argument(help: "Paths to read.") var paths: [String]

    func run() async throws {
        do {
            try await connection.withClient { client in
                try await client.immediate { handle in
                    for path in paths {
                        let value = try await handle.read(path)
                        print(prefix ? "\(path): \(value)" : value)
                    }
                }
            }
        } catch { throw storeFailure("read", error) }
    }
}

/// `xenstore-write`: writes path/value pairs.
struct StoreClientWrite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write", abstract: "Write path/value pairs.")
    @OptionGroup var connection: StoreConnectionOptions
    @Argument(help: "path value [path value ...]") var pairs: [String]

    func validate() throws {
        guard !pairs.isEmpty, pairs.count.isMultiple(of: 2) else {
            throw ValidationError("expected path value pairs")
        }
    }

    func run() async throws {
        do {
            try await connection.withClient { client in
                try await client.transaction { handle in
                    for index in stride(from: 0, to: pairs.count, by: 2) {
                        try await handle.write(pairs[index], pairs[index + 1])
                    }
                }
            }
        } catch { throw storeFailure("write", error) }
    }
}

/// `xenstore-ls`: the tree below a path, one node per line, `name = "value"` indented one space per level.
struct StoreClientList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a xenstore subtree.")
    @OptionGroup var connection: StoreConnectionOptions
    @Flag(name: .short, help: "Print full paths.") var full = false
    @Flag(name: .short, help: "Print permissions.") var permissions = false
    @Argument(help: "Root of the listing.") var path: String = "/"

    func run() async throws {
        do {
            try await connection.withClient { client in
                try await client.immediate { handle in try await list(handle, path, depth: 0) }
            }
        } catch { throw storeFailure("ls", error) }
    }

    private func list(_ handle: XenStoreHandle, _ parent: String, depth: Int) async throws {
        for child in try await handle.directory(parent) {
            let childPath = parent.hasSuffix("/") ? parent + child : parent + "/" + child
            let value: String
            do {
                value = try await handle.read(childPath)
            } catch XenStoreError.noEntry {
                continue  // removed meanwhile
            }
            var line =
                full
                ? "\(childPath) = \"\(escape(value))\""
                : "\(String(repeating: " ", count: depth))\(child) = \"\(escape(value))\""
            if permissions, let acl = try? await handle.permissions(of: childPath) {
                line += "  (\(acl.strings.joined(separator: ",")))"
            }
            print(line)
            try await list(handle, childPath, depth: depth + 1)
        }
    }

    /// xenstore-ls' `sanitise_value`: backslash and non-printable bytes as escapes.
    private func escape(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): out += "\\\\"
            case UInt8(ascii: "\t"): out += "\\t"
            case UInt8(ascii: "\n"): out += "\\n"
            case UInt8(ascii: "\r"): out += "\\r"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(byte))
            default: out += "\\" + String(byte, radix: 8).leftPadded(to: 3)
            }
        }
        return out
    }
}

/// `xenstore-rm`: removes nodes.
struct StoreClientRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove xenstore nodes.")
    @OptionGroup var connection: StoreConnectionOptions
    @Argument(help: "Paths to remove.") var paths: [String]

    func run() async throws {
        do {
            try await connection.withClient { client in
                try await client.transaction { handle in
                    for path in paths { try await handle.remove(path) }
                }
            }
        } catch { throw storeFailure("rm", error) }
    }
}

/// `mkdir`: creates empty nodes.
struct StoreClientMkdir: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mkdir", abstract: "Create empty xenstore nodes.")
    @OptionGroup var connection: StoreConnectionOptions
    @Argument(help: "Paths to create.") var paths: [String]

    func run() async throws {
        do {
            try await connection.withClient { client in
                try await client.immediate { handle in
                    for path in paths { try await handle.createDirectory(path) }
                }
            }
        } catch { throw storeFailure("mkdir", error) }
    }
}

/// `xenstore-chmod path perm...`: sets permissions (`b0`, `r5`, `n3`; first = owner and default).
struct StoreClientChmod: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chmod", abstract: "Set a node's permissions.")
    @OptionGroup var connection: StoreConnectionOptions
    @Flag(name: .short, help: "Apply recursively.") var recursive = false
    @Argument(help: "The node.") var path: String
    @Argument(help: "Permissions, owner first (b0 r5 ...).") var perms: [String]

    func run() async throws {
        guard let acl = XenStorePermissions(strings: perms) else {
            throw storeFailure("chmod", ValidationError("invalid permissions \(perms)"))
        }
        do {
            try await connection.withClient { client in
                try await client.immediate { handle in try await apply(handle, path, acl) }
            }
        } catch { throw storeFailure("chmod", error) }
    }

    private func apply(_ handle: XenStoreHandle, _ node: String, _ acl: XenStorePermissions) async throws {
        try await handle.setPermissions(node, to: acl)
        guard recursive else { return }
        for child in try await handle.directory(node) {
            try await apply(handle, node.hasSuffix("/") ? node + child : node + "/" + child, acl)
        }
    }
}

/// `xenstore-watch`: prints the path of each event, stopping after `-n` events.
struct StoreClientWatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch", abstract: "Print watch events.")
    @OptionGroup var connection: StoreConnectionOptions
    @Option(name: .short, help: "Stop after this many events.") var number: Int?
    @Argument(help: "The path to watch.") var path: String

    func run() async throws {
        do {
            try await connection.withClient { client in
                var seen = 0
                for try await event in try await client.watches(path) {
                    print(event.path)
                    fflush(nil)
                    seen += 1
                    if let number, seen >= number { break }
                }
            }
        } catch { throw storeFailure("watch", error) }
    }
}

/// `xenstore-exists`: exit status 0 if every path exists, 1 otherwise; no output.
struct StoreClientExists: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exists", abstract: "Test whether nodes exist.")
    @OptionGroup var connection: StoreConnectionOptions
    @Argument(help: "Paths to test.") var paths: [String]

    func run() async throws {
        let all: Bool
        do {
            all = try await connection.withClient { client in
                try await client.immediate { handle in
                    for path in paths where !(try await handle.exists(path)) { return false }
                    return true
                }
            }
        } catch { throw storeFailure("exists", error) }
        if !all { throw ExitCode(1) }
    }
}

/// The client subcommands, for the `store` group.
let storeClientSubcommands: [any ParsableCommand.Type] = [
    StoreClientRead.self, StoreClientWrite.self, StoreClientList.self, StoreClientRemove.self,
    StoreClientMkdir.self, StoreClientChmod.self, StoreClientWatch.self, StoreClientExists.self,
]

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
