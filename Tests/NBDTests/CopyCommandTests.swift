import BlockDevice
import Foundation
import NBDClient
import NBDServer
import Testing
import XenCore

/// `swiftxen nbd copy`, the built executable run as a process against real peers: our NBDServer (in this
/// process) and nbdkit on unix sockets, files, pipes, FIFOs, `null:` and /dev/null. Every case checks the
/// bytes that landed.
@Suite("swiftxen nbd copy against NBD servers, files and streams", .serialized)
struct CopyCommandTests {
    // MARK: - Helpers

    /// The `swiftxen` executable: `swift build --build-tests` builds it into the directory of the test
    /// binary (.build/debug/SwiftXenPackageTests.xctest). Missing, the test fails: it never passes untested.
    private static func swiftxen() throws -> String {
        let test = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let path = URL(fileURLWithPath: test).deletingLastPathComponent().appendingPathComponent("swiftxen").path
        try #require(
            FileManager.default.isExecutableFile(atPath: path),
            "no swiftxen executable at \(path): build it with `swift build --build-tests` (it lands next to the test binary)"
        )
        return path
    }

    /// `swiftxen nbd copy <arguments>`, with `input` on its standard input.
    private func copy(_ arguments: [String], input: Data? = nil) async throws -> ToolResult {
        try await tool(Self.swiftxen(), ["nbd", "copy"] + arguments, input: input)
    }

    /// `script` under bash with pipefail; `$1` is the swiftxen executable, `$2`... are `arguments`.
    private func shell(_ script: String, _ arguments: [String]) async throws -> ToolResult {
        try await tool("/bin/bash", ["-c", "set -o pipefail; " + script, "copy-test", Self.swiftxen()] + arguments)
    }

    /// `count` pseudo-random bytes (fixed by `seed`).
    private static func random(_ count: Int, seed: UInt64) -> Data {
        var generator = SplitMix64(seed: seed)
        return Data(generator.bytes(count: count))
    }

    /// `source.img` in `directory`: `size` random bytes from `seed`, and the bytes.
    private static func sourceFile(in directory: URL, size: Int, seed: UInt64) throws -> (String, Data) {
        let path = directory.appendingPathComponent("source.img").path
        let data = random(size, seed: seed)
        try write(data, to: path)
        return (path, data)
    }

    private static func contents(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    private static func write(_ data: Data, to path: String) throws { try data.write(to: URL(fileURLWithPath: path)) }

    /// A sparse file of `size` bytes with random data only in `islands` (offset, length); returns what it reads as.
    private static func sparseFile(_ path: String, size: Int, islands: [(Int, Int)], seed: UInt64) throws -> Data {
        var expected = Data(count: size)
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0, "open \(path)")
        defer { close(fd) }
        #expect(ftruncate(fd, off_t(size)) == 0)
        for (index, (offset, length)) in islands.enumerated() {
            let data = random(length, seed: seed + UInt64(index))
            expected.replaceSubrange(offset..<(offset + length), with: data)
            let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, length, off_t(offset)) }
            #expect(written == length)
        }
        return expected
    }

    /// Bytes the file system has allocated for `path`.
    private static func allocatedBytes(_ path: String) -> Int {
        var status = stat()
        guard stat(path, &status) == 0 else { return -1 }
        return Int(status.st_blocks) * 512
    }

    private static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? -1
    }

    /// The whole export at `uri`, read with our client.
    private static func readExport(_ uri: String) async throws -> Data {
        let client = try await NBDClient.connect(uri: uri)
        let size = Int(client.size)
        let buffer = PageBuffer(pages: (size + 4095) / 4096).slice(from: 0, count: size)
        do { try await client.read(at: 0, into: [buffer]) } catch {
            await client.disconnect()
            throw error
        }
        await client.disconnect()
        return Data(buffer.bytes)
    }

    /// Runs `body` with our NBDServer serving `exports`, stopping the server however `body` ends.
    private func withServer(_ exports: [NBDServerExport], _ body: (ServerRig) async throws -> Void) async throws {
        let rig = try await ServerRig(exports)
        do { try await body(rig) } catch {
            await rig.stop()
            throw error
        }
        await rig.stop()
    }

    /// How many bytes of `path` are in the page cache: util-linux fincore, else mincore(2) on a mapping
    /// (which faults nothing in).
    private static func residentBytes(_ path: String) async throws -> Int {
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/fincore") {
            let result = try await tool(
                "/usr/bin/fincore", ["--bytes", "--noheadings", "--raw", "--output", "RES", path])
            let text = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
            return try #require(Int(text), "fincore: \(result.output) \(result.errors)")
        }
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let size = fileSize(path)
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mapping = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)
        try #require(mapping != MAP_FAILED)
        defer { munmap(mapping, size) }
        var pages = [UInt8](repeating: 0, count: (size + pageSize - 1) / pageSize)
        try #require(mincore(mapping, size, &pages) == 0)
        return pages.reduce(0) { $0 + Int($1 & 1) } * pageSize
    }

    /// The file system's type is tmpfs: its pages are its storage and never leave the page cache.
    private static func isTmpfs(_ path: String) async throws -> Bool {
        let type = try await tool("/usr/bin/stat", ["--file-system", "--format", "%T", path])
        try #require(type.status == 0, "stat -f \(path): \(type.errors)")
        return type.output.trimmingCharacters(in: .whitespacesAndNewlines) == "tmpfs"
    }

    // MARK: - 1. NBD → file

    @Test func nbdToFileCreatesGrowsAndNeverShrinks() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = 16 << 20
        let (sourcePath, source) = try Self.sourceFile(in: directory, size: size, seed: 1)
        try await withServer([NBDServerExport(name: "disk", device: try FileBlockDevice(path: sourcePath))]) { rig in
            // A new file is created with the source's bytes.
            let fresh = directory.appendingPathComponent("fresh.img").path
            let created = try await copy([rig.uri("disk"), fresh])
            #expect(created.status == 0, "\(created.errors)")
            #expect(Self.fileSize(fresh) == size)
            #expect(try Self.contents(fresh) == source)

            // An existing larger file keeps its size and its bytes past the source's end.
            let larger = directory.appendingPathComponent("larger.img").path
            let tail = Data(repeating: 0x5A, count: 8 << 20)
            try Self.write(Data(repeating: 0x5A, count: size) + tail, to: larger)
            let over = try await copy([rig.uri("disk"), larger])
            #expect(over.status == 0, "\(over.errors)")
            #expect(Self.fileSize(larger) == size + tail.count)
            #expect(try Self.contents(larger) == source + tail)

            // An existing smaller file is grown to the source's size.
            let smaller = directory.appendingPathComponent("smaller.img").path
            try Self.write(Data(repeating: 0x33, count: 1 << 20), to: smaller)
            let grown = try await copy([rig.uri("disk"), smaller])
            #expect(grown.status == 0, "\(grown.errors)")
            #expect(try Self.contents(smaller) == source)
        }
    }

    // MARK: - 2. NBD → file write-behind

    /// nbdcopy's write-behind: each range is handed to writeback as written and dropped from the page cache
    /// once it is on disk, so a copy leaves little of the destination cached.
    @Test func nbdToFileLeavesLittleOfTheDestinationInThePageCache() async throws {
        var directory = try makeTemporaryDirectory("nbdcopy")
        if try await Self.isTmpfs(directory.path) {
            // tmpfs pages never leave the cache: measure on the build directory's file system instead.
            try? FileManager.default.removeItem(at: directory)
            let test = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            directory = URL(fileURLWithPath: test).deletingLastPathComponent()
                .appendingPathComponent("nbdcopy-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        defer { try? FileManager.default.removeItem(at: directory) }
        try #require(try await !Self.isTmpfs(directory.path), "no disk-backed directory to measure the page cache in")
        let size = 64 << 20
        let source = Self.random(size, seed: 2)
        let server = try NBDKit(["memory", "size=\(size)"])
        defer { server.stop() }
        let sourcePath = directory.appendingPathComponent("source.img").path
        try Self.write(source, to: sourcePath)
        let filled = try await copy([sourcePath, server.uri()])
        #expect(filled.status == 0, "\(filled.errors)")
        // The measurement sees a file just written (and never dropped) as cached.
        let written = try await Self.residentBytes(sourcePath)
        #expect(written > size / 2, "only \(written) of \(size) bytes of a file just written are in the page cache")
        try FileManager.default.removeItem(atPath: sourcePath)

        let destination = directory.appendingPathComponent("destination.img").path
        let copied = try await copy([server.uri(), destination])
        #expect(copied.status == 0, "\(copied.errors)")
        // Measured before anything reads the destination back (which would cache it).
        let resident = try await Self.residentBytes(destination)
        #expect(resident < size / 4, "\(resident) of \(size) bytes of the destination are in the page cache")
        #expect(try Self.contents(destination) == source)
    }

    // MARK: - 3. file → NBD

    @Test func fileToNBDReadsBackEqual() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = 16 << 20
        let (sourcePath, source) = try Self.sourceFile(in: directory, size: size, seed: 3)
        // Into our server's memory export (the source is in the page cache: sent with sendfile).
        try await withServer([ServerRig.memory(UInt64(size), name: "scratch")]) { rig in
            let result = try await copy([sourcePath, rig.uri("scratch")])
            #expect(result.status == 0, "\(result.errors)")
            #expect(try await Self.readExport(rig.uri("scratch")) == source)
        }
        // Into nbdkit's memory plugin with the source out of the page cache (read, then written), one
        // connection, two requests in flight of an odd request size (rounded down to 24 pages).
        let fd = open(sourcePath, O_RDONLY)
        #expect(fd >= 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
        close(fd)
        let server = try NBDKit(["memory", "size=\(size)"])
        defer { server.stop() }
        let result = try await copy([
            "--connections", "1", "--requests", "2", "--request-size", "100000", sourcePath, server.uri(),
        ])
        #expect(result.status == 0, "\(result.errors)")
        #expect(try await Self.readExport(server.uri()) == source)
    }

    // MARK: - 4. null: and /dev/null

    @Test func nullAndDevNullDestinations() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = 8 << 20
        let server = try NBDKit(["memory", "size=\(size)"])
        defer { server.stop() }
        let sourcePath = directory.appendingPathComponent("source.img").path
        try Self.write(Self.random(size, seed: 4), to: sourcePath)
        #expect(try await copy([sourcePath, server.uri()]).status == 0)

        // null: discards, and is no file name: nothing named "null:" appears in the working directory.
        let null = try await shell(#"cd "$2" && "$1" nbd copy "$3" null:"#, [directory.path, server.uri()])
        #expect(null.status == 0, "\(null.errors)")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("null:").path))
        #expect(try await copy([sourcePath, "null:"]).status == 0)
        // A character device has no size to respect and is written in order (it used to be refused as
        // "smaller than the source").
        let device = try await copy([server.uri(), "/dev/null"])
        #expect(device.status == 0, "\(device.errors)")
        #expect(!device.errors.contains("smaller"), "\(device.errors)")
        #expect(try await copy(["--flush", sourcePath, "/dev/null"]).status == 0)
    }

    // MARK: - 5. - (stdin, stdout), pipes and FIFOs

    @Test func standardInputAndOutputPipesAndFIFOs() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = 8 << 20
        let (sourcePath, source) = try Self.sourceFile(in: directory, size: size, seed: 5)
        try await withServer([ServerRig.memory(UInt64(size), name: "a"), ServerRig.memory(UInt64(size), name: "b")]) {
            rig in
            // stdin from a pipe → NBD.
            let piped = try await shell(#"cat "$2" | "$1" nbd copy - "$3""#, [sourcePath, rig.uri("a")])
            #expect(piped.status == 0, "\(piped.errors)")
            #expect(try await Self.readExport(rig.uri("a")) == source)
            // stdin from a regular file → NBD; also what the test process writes into a pipe.
            let redirected = try await shell(#""$1" nbd copy - "$3" < "$2""#, [sourcePath, rig.uri("b")])
            #expect(redirected.status == 0, "\(redirected.errors)")
            #expect(try await Self.readExport(rig.uri("b")) == source)
            let reversed = Data(source.reversed())
            let fed = try await copy(["-", rig.uri("b")], input: reversed)
            #expect(fed.status == 0, "\(fed.errors)")
            #expect(try await Self.readExport(rig.uri("b")) == reversed)

            // NBD → stdout into a pipe, and into a file.
            let out = directory.appendingPathComponent("out.img").path
            let toPipe = try await shell(#""$1" nbd copy "$2" - | cat > "$3""#, [rig.uri("a"), out])
            #expect(toPipe.status == 0, "\(toPipe.errors)")
            #expect(try Self.contents(out) == source)
            let toFile = try await shell(#""$1" nbd copy "$2" - > "$3""#, [rig.uri("b"), out])
            #expect(toFile.status == 0, "\(toFile.errors)")
            #expect(try Self.contents(out) == reversed)

            // NBD → a FIFO read by cat.
            let fifo = directory.appendingPathComponent("fifo").path
            #expect(mkfifo(fifo, 0o600) == 0)
            let throughFIFO = try await shell(
                #"cat "$3" > "$4" & reader=$!; "$1" nbd copy "$2" "$3"; status=$?; wait $reader && exit $status"#,
                [rig.uri("a"), fifo, out])
            #expect(throughFIFO.status == 0, "\(throughFIFO.errors)")
            #expect(try Self.contents(out) == source)
        }
    }

    /// A stream of unknown size into a file: written as it comes, the file created or grown.
    @Test func standardInputToFile() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = Self.random((5 << 20) + 123, seed: 6)
        let fresh = directory.appendingPathComponent("fresh.img").path
        let created = try await copy(["-", fresh], input: source)
        #expect(created.status == 0, "\(created.errors)")
        #expect((try? Self.contents(fresh)) == source)
        // An existing larger file is overwritten from the start and keeps its tail.
        let larger = directory.appendingPathComponent("larger.img").path
        let tail = Data(repeating: 0x77, count: 1 << 20)
        try Self.write(Data(repeating: 0x77, count: source.count) + tail, to: larger)
        let over = try await copy(["-", larger], input: source)
        #expect(over.status == 0, "\(over.errors)")
        #expect((try? Self.contents(larger)) == source + tail)
    }

    // MARK: - 6. Sparse NBD → NBD and NBD → file

    /// 32 MiB with data at the start, in the middle (not megabyte-aligned) and up to the end; holes between.
    private static let sparseSize = 32 << 20
    private static let islands = [
        (0, 256 << 10), ((8 << 20) + 4096, 3 << 20), (20 << 20, 64 << 10), (31 << 20, 1 << 20),
    ]
    /// What the islands take on disk; a copy that keeps the holes allocates little more.
    private static var islandBytes: Int { islands.reduce(0) { $0 + $1.1 } }

    @Test func sparseNBDToNBDZeroesTheHoles() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = Self.sparseSize
        let sourcePath = directory.appendingPathComponent("sparse.img").path
        let source = try Self.sparseFile(sourcePath, size: size, islands: Self.islands, seed: 60)
        #expect(Self.allocatedBytes(sourcePath) <= Self.islandBytes + (1 << 20), "the source file is not sparse")
        // nbdkit serves the sparse file (block status from SEEK_DATA); our server serves a destination file
        // filled with non-zero bytes.
        let server = try NBDKit(["file", "file=\(sourcePath)"])
        defer { server.stop() }
        let map = try await tool("/usr/bin/nbdinfo", ["--map", server.uri()])
        #expect(map.output.contains("hole,zero"), "nbdkit reports no holes: \(map.output)")
        let destinationPath = directory.appendingPathComponent("destination.img").path
        let filler = Data(repeating: 0xA5, count: size)
        try Self.write(filler, to: destinationPath)
        try await withServer([NBDServerExport(name: "d", device: try FileBlockDevice(path: destinationPath))]) { rig in
            let sparse = try await copy([server.uri(), rig.uri("d")])
            #expect(sparse.status == 0, "\(sparse.errors)")
            #expect(try Self.contents(destinationPath) == source)
            // The holes went over as WRITE_ZEROES, which our server punches: the destination is sparse again.
            #expect(
                Self.allocatedBytes(destinationPath) <= Self.islandBytes + (1 << 20),
                "\(Self.allocatedBytes(destinationPath))")

            // --no-extents: every byte read and written as data, the same result.
            try Self.write(filler, to: destinationPath)
            let dense = try await copy(["--no-extents", server.uri(), rig.uri("d")])
            #expect(dense.status == 0, "\(dense.errors)")
            #expect(try Self.contents(destinationPath) == source)

            // --destination-is-zero believes the destination: the holes are not zeroed, so the filler stays.
            try Self.write(filler, to: destinationPath)
            let trusted = try await copy(["--destination-is-zero", server.uri(), rig.uri("d")])
            #expect(trusted.status == 0, "\(trusted.errors)")
            var expected = filler
            for (offset, length) in Self.islands {
                expected.replaceSubrange(offset..<(offset + length), with: source[offset..<(offset + length)])
            }
            #expect(try Self.contents(destinationPath) == expected)
        }
        // Our server as the sparse source (a sparse FileBlockDevice), nbdkit's memory plugin pre-filled with
        // non-zero bytes as the destination.
        let memory = try NBDKit(["memory", "size=\(size)"])
        defer { memory.stop() }
        let fillerPath = directory.appendingPathComponent("filler.img").path
        try Self.write(filler, to: fillerPath)
        #expect(try await copy([fillerPath, memory.uri()]).status == 0)
        #expect(try await Self.readExport(memory.uri()) == filler)
        try await withServer([NBDServerExport(name: "s", device: try FileBlockDevice(path: sourcePath))]) { rig in
            let result = try await copy(["--connections", "2", rig.uri("s"), memory.uri()])
            #expect(result.status == 0, "\(result.errors)")
            #expect(try await Self.readExport(memory.uri()) == source)
        }
    }

    @Test func sparseNBDToFile() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = Self.sparseSize
        let sourcePath = directory.appendingPathComponent("sparse.img").path
        let source = try Self.sparseFile(sourcePath, size: size, islands: Self.islands, seed: 61)
        try await withServer([NBDServerExport(name: "s", device: try FileBlockDevice(path: sourcePath))]) { rig in
            // A new file: the holes are left as holes.
            let fresh = directory.appendingPathComponent("fresh.img").path
            let created = try await copy([rig.uri("s"), fresh])
            #expect(created.status == 0, "\(created.errors)")
            #expect(try Self.contents(fresh) == source)
            #expect(Self.allocatedBytes(fresh) <= Self.islandBytes + (1 << 20), "\(Self.allocatedBytes(fresh))")
            // An existing file of non-zero bytes: the holes are punched.
            let existing = directory.appendingPathComponent("existing.img").path
            try Self.write(Data(repeating: 0xC3, count: size), to: existing)
            let over = try await copy([rig.uri("s"), existing])
            #expect(over.status == 0, "\(over.errors)")
            #expect(try Self.contents(existing) == source)
            #expect(Self.allocatedBytes(existing) <= Self.islandBytes + (1 << 20), "\(Self.allocatedBytes(existing))")
            // --no-extents into an existing file: the same bytes.
            try Self.write(Data(repeating: 0xC3, count: size), to: existing)
            let dense = try await copy(["--no-extents", rig.uri("s"), existing])
            #expect(dense.status == 0, "\(dense.errors)")
            #expect(try Self.contents(existing) == source)
        }
    }

    // MARK: - 7. --flush and failures

    /// `--flush` flushes the destination once at the end (our server counts the FLUSHes its device sees);
    /// without it, nothing is flushed.
    @Test func flushFlushesTheDestination() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let size = 8 << 20
        let (sourcePath, source) = try Self.sourceFile(in: directory, size: size, seed: 7)
        let device = GatedFlushDevice(sizeSectors: UInt64(size / 512))
        await device.release()
        try await withServer([NBDServerExport(name: "m", device: device)]) { rig in
            let plain = try await copy([sourcePath, rig.uri("m")])
            #expect(plain.status == 0, "\(plain.errors)")
            #expect(await device.flushesStarted == 0)
            let flushed = try await copy(["--flush", sourcePath, rig.uri("m")])
            #expect(flushed.status == 0, "\(flushed.errors)")
            #expect(await device.flushesStarted >= 1)
            #expect(try await Self.readExport(rig.uri("m")) == source)
            // To a file (fsync) and to stdout.
            let back = directory.appendingPathComponent("back.img").path
            let toFile = try await copy(["--flush", rig.uri("m"), back])
            #expect(toFile.status == 0, "\(toFile.errors)")
            #expect(try Self.contents(back) == source)
            let toStdout = try await shell(#""$1" nbd copy --flush "$2" - > "$3""#, [rig.uri("m"), back])
            #expect(toStdout.status == 0, "\(toStdout.errors)")
            #expect(try Self.contents(back) == source)
        }
    }

    @Test func smallerDestinationsAndBadEndpointsFailCleanly() async throws {
        let directory = try makeTemporaryDirectory("nbdcopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let (sourcePath, source) = try Self.sourceFile(in: directory, size: 16 << 20, seed: 8)
        /// Failed with an error message, not a crash (a signal shows as a status above 128 or a trap): a copy
        /// that fails while running exits 1 as nbdcopy does, without the usage text; a command line that cannot
        /// be run exits 64 (EX_USAGE) with it.
        func failed(_ result: ToolResult, saying text: String, usage: Bool = false) {
            #expect(result.status == (usage ? 64 : 1), "\(result.status): \(result.errors)")
            #expect(result.errors.contains(text), "\(result.status): \(result.errors)")
            #expect(result.errors.contains("Usage:") == usage, "\(result.errors)")
            #expect(!result.errors.contains("Fatal error"), "\(result.errors)")
        }
        let small = try NBDKit(["memory", "size=8M"])
        defer { small.stop() }
        try await withServer([ServerRig.memory(16 << 20, name: "big")]) { rig in
            #expect(try await copy([sourcePath, rig.uri("big")]).status == 0)
            // A smaller NBD destination, from NBD, from a file and from a stream of unknown size.
            failed(try await copy([rig.uri("big"), small.uri()]), saying: "smaller")
            failed(try await copy([sourcePath, small.uri()]), saying: "smaller")
            // Sizes known up front are checked before anything is written.
            #expect(try await Self.readExport(small.uri()) == Data(count: 8 << 20))
            failed(try await copy(["-", small.uri()], input: source), saying: "smaller")

            // An NBD socket nobody listens on, as the source and as the destination (the other side open).
            let missing = "nbd+unix:///?socket=\(directory.path)/missing.sock"
            failed(try await copy([missing, directory.appendingPathComponent("x.img").path]), saying: "cannot connect")
            failed(try await copy([rig.uri("big"), missing]), saying: "cannot connect")
            failed(try await copy([missing, rig.uri("big")]), saying: "cannot connect")
            // An export the server does not have, and URIs that do not parse.
            failed(try await copy([rig.uri("nosuchexport"), "null:"]), saying: "unknown export")
            failed(try await copy(["nbd://127.0.0.1:notaport/", "null:"]), saying: "bad port")
            failed(try await copy(["nbd+unix:///", "null:"]), saying: "missing ?socket=")
        }
        // Files that cannot be opened, and null: as a source.
        failed(try await copy([directory.appendingPathComponent("absent.img").path, "null:"]), saying: "cannot open")
        failed(
            try await copy([sourcePath, directory.appendingPathComponent("no/such/dir.img").path]),
            saying: "cannot open")
        failed(try await copy(["null:", "null:"]), saying: "null: can only be a destination", usage: true)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("x.img").path))
    }
}
