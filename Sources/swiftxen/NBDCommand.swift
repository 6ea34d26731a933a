import ArgumentParser
import Foundation
import NBDClient
import NBDProtocol
import XenCore

/// `swiftxen nbd list|info|copy`: an nbdinfo / nbdcopy twin over NBDClient.
struct NBDCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nbd", abstract: "NBD client: list exports, show an export, copy between NBD and files.",
        subcommands: [List.self, Info.self, Copy.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the exports of an NBD server (nbdinfo --list).")
        @Argument(help: "NBD URI, e.g. nbd+unix:///?socket=/tmp/sock or nbds://host/") var uri: String

        func run() async throws {
            let parsed = try NBDURI(parsing: uri)
            let channel = try await NBDChannel.connect(to: parsed.endpoint)
            let tls = parsed.tls ? NBDTLSOptions(uri: parsed) : nil
            switch await NBDClient.listWithDescriptions(channel, tls: tls) {
            case .success(let exports):
                for export in exports {
                    print(
                        export.description.isEmpty
                            ? "export=\(export.name)" : "export=\(export.name)\t\(export.description)")
                }
            case .failure(.policy): throw ValidationError("the server does not allow listing exports")
            case .failure(.unsupported): throw ValidationError("the server cannot list exports")
            }
        }
    }

    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show size, flags and limits of an export (nbdinfo).")
        @Argument(help: "NBD URI") var uri: String
        @Flag(help: "Print only the size in bytes.") var size = false

        func run() async throws {
            let client = try await NBDClient.connect(uri: uri)
            let session = client.session
            if size {
                print(client.size)
                await client.disconnect()
                return
            }
            print("export=\"\(session.export)\":")
            if let description = session.description { print("\tdescription: \(description)") }
            print("\texport-size: \(client.size)")
            print("\tflags: \(client.flags)")
            print("\tblock_size_minimum: \(session.blockSize.minimum)")
            print("\tblock_size_preferred: \(session.blockSize.preferred)")
            print("\tblock_size_maximum: \(session.blockSize.maximum)")
            print("\tstructured replies: \(session.structuredReplies), extended headers: \(session.extendedHeaders)")
            print("\tTLS: \(session.tls)")
            for (name, id) in session.metaContexts.sorted(by: { $0.key < $1.key }) {
                print("\tcontext: \(name) (id \(id))")
            }
            await client.disconnect()
        }
    }

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Copy between NBD URIs and files (nbdcopy).")
        @Argument(help: "Source: an NBD URI or a file") var source: String
        @Argument(help: "Destination: an NBD URI or a file (created if missing)") var destination: String
        @Option(help: "Connections per NBD side (used when the server allows multi-conn).") var connections = 4
        @Option(help: "Requests in flight in total.") var requests = 64
        @Option(help: "Bytes per request.") var requestSize = 256 << 10
        @Flag(help: "Show a progress bar even when stderr is not a terminal.") var progress = false

        func run() async throws {
            let options = NBDClientOptions(connections: connections)
            let input = try await Endpoint.open(source, options: options, writable: false, size: nil)
            let output = try await Endpoint.open(destination, options: options, writable: true, size: input.size)
            let size = input.size
            guard output.size >= size else { throw ValidationError("destination is smaller than the source") }
            let chunk = max(4096, requestSize - requestSize % 4096)
            let pieces = Int((size + UInt64(chunk) - 1) / UInt64(chunk))
            let bar = ProgressBar(total: size, enabled: progress || isatty(2) == 1)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<max(1, requests) {
                    group.addTask {
                        let buffer = PageBuffer(pages: chunk / 4096)
                        var piece = worker
                        while piece < pieces {
                            let offset = UInt64(piece) * UInt64(chunk)
                            let view = buffer.slice(from: 0, count: Int(min(UInt64(chunk), size - offset)))
                            try await input.read(view, at: offset)
                            try await output.write(view, at: offset)
                            bar.advance(UInt64(view.count))
                            piece += max(1, requests)
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await output.finish()
            await input.close()
            await output.close()
            bar.finish()
        }
    }
}

/// One side of a copy: an NBD export or a local file.
private enum Endpoint: Sendable {
    case nbd(NBDClient)
    case file(Int32, UInt64)

    static func open(_ text: String, options: NBDClientOptions, writable: Bool, size: UInt64?) async throws -> Endpoint
    {
        if text.contains("://") { return .nbd(try await NBDClient.connect(uri: text, options: options)) }
        let fd = writable ? Glibc.open(text, O_RDWR | O_CREAT, 0o644) : Glibc.open(text, O_RDONLY)
        guard fd >= 0 else { throw ValidationError("cannot open \(text): \(String(cString: strerror(errno)))") }
        if writable, let size {
            var status = stat()
            fstat(fd, &status)
            if UInt64(status.st_size) < size { ftruncate(fd, off_t(size)) }
        }
        return .file(fd, UInt64(lseek(fd, 0, SEEK_END)))
    }

    var size: UInt64 {
        switch self {
        case .nbd(let client): client.size
        case .file(_, let size): size
        }
    }

    func read(_ buffer: PageBuffer, at offset: UInt64) async throws {
        switch self {
        case .nbd(let client): try await client.pread(into: [buffer], at: offset)
        case .file(let fd, _):
            var done = 0
            while done < buffer.count {
                let got = pread(fd, buffer.pointer + done, buffer.count - done, off_t(offset) + off_t(done))
                guard got > 0 else { throw ValidationError("short read from file at \(offset)") }
                done += got
            }
        }
    }

    func write(_ buffer: PageBuffer, at offset: UInt64) async throws {
        switch self {
        case .nbd(let client): try await client.pwrite([buffer], at: offset)
        case .file(let fd, _):
            var done = 0
            while done < buffer.count {
                let put = pwrite(fd, buffer.pointer + done, buffer.count - done, off_t(offset) + off_t(done))
                guard put > 0 else { throw ValidationError("write to file failed at \(offset)") }
                done += put
            }
        }
    }

    func finish() async throws {
        switch self {
        case .nbd(let client): try await client.flushWrites()
        case .file(let fd, _): fsync(fd)
        }
    }

    func close() async {
        switch self {
        case .nbd(let client): await client.disconnect()
        case .file(let fd, _): Glibc.close(fd)
        }
    }
}

/// A one-line progress bar on stderr.
private final class ProgressBar: @unchecked Sendable {
    private let total: UInt64
    private let enabled: Bool
    private let lock = NSLock()
    private var done: UInt64 = 0
    private var lastPercent = -1

    init(total: UInt64, enabled: Bool) {
        self.total = max(total, 1)
        self.enabled = enabled
    }

    func advance(_ bytes: UInt64) {
        guard enabled else { return }
        lock.lock()
        done += bytes
        let percent = Int(done * 100 / total)
        let draw = percent != lastPercent
        lastPercent = percent
        lock.unlock()
        if draw {
            let filled = percent / 2
            let line =
                "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 50 - filled)
                + "] \(percent)%"
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}
