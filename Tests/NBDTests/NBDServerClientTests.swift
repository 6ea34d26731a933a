import BlockDevice
import Foundation
import NBDClient
import NBDProtocol
import NBDServer
import Synchronization
import Testing
import XenCore

/// NBDServer driven by our own NBDClient: every header format, every command, several exports, list,
/// negotiate, TLS, out-of-order replies, shutdown.
@Suite("NBDServer against NBDClient", .serialized)
struct NBDServerClientTests {
    private func flags(_ extents: [NBDExtent]) -> [UInt64] { extents.map(\.flags) }

    /// With the connections' busy polling (the default) and without (every wait sleeps in `poll`).
    @Test(arguments: [true, false]) func everyCommandInEveryHeaderFormat(busyPolling: Bool) async throws {
        let options = NBDServerOptions(busyPollWindow: busyPolling ? .microseconds(100) : nil)
        let rig = try await ServerRig([ServerRig.memory(8 << 20)], options: options, tcp: true)
        let formats: [(String, NBDNegotiationOptions)] = [
            ("extended", NBDNegotiationOptions()),
            ("structured", NBDNegotiationOptions(extendedHeaders: false)),
            ("simple", NBDNegotiationOptions(structuredReplies: false, extendedHeaders: false, metaContexts: [])),
        ]
        for (index, (name, negotiation)) in formats.enumerated() {
            let client = try await NBDClient.connect(
                uri: rig.uri(tcp: index == 1), options: NBDClientOptions(negotiation: negotiation, connections: 2))
            #expect(client.size == 8 << 20, "\(name)")
            #expect(client.session.extendedHeaders == (name == "extended"))
            #expect(client.session.structuredReplies == (name != "simple"))
            #expect(client.connectionCount == 2 && client.flags.contains(.canMultiConn))
            #expect(client.session.blockSize == NBDBlockSize(minimum: 512, preferred: 4096, maximum: 32 << 20))
            let base = UInt64(index) << 21
            // 32 writes and reads in flight at once.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for piece in 0..<32 {
                    group.addTask {
                        let data = pattern(16384, seed: UInt8(piece + index))
                        try await client.write(at: base + UInt64(piece) * 16384, from: [data], fua: piece % 8 == 0)
                        let back = PageBuffer(pages: 4)
                        try await client.read(at: base + UInt64(piece) * 16384, into: [back])
                        #expect(back.contentsEqual(data))
                    }
                }
                try await group.waitForAll()
            }
            try await client.flush()
            try await client.cache(at: base, length: 1 << 20)
            // Zeroing and trimming, seen through reads and (when negotiated) block status.
            try await client.writeZeroes(at: base, length: 65536, noHole: true)
            try await client.writeZeroes(at: base + 65536, length: 65536, fastZero: true)
            try await client.trim(at: base + 131072, length: 131072, fua: true)
            let zeroes = PageBuffer(pages: 64)
            try await client.read(at: base, into: [zeroes])
            #expect(zeroes.bytes.allSatisfy { $0 == 0 })
            if negotiation.structuredReplies {
                let extents = try await client.blockStatus(at: base, length: 512 << 10)
                // NO_HOLE keeps the first chunk allocated; the others became holes; the rest is data.
                #expect(extents.map(\.length) == [65536, 196608, 262144], "\(name)")
                #expect(flags(extents) == [0, 3, 0], "\(name)")
            }
            await client.disconnect()
        }
        #expect(await rig.waitIdle())
        await rig.stop()
    }

    @Test func sparseFileReadsAndAllocationMap() async throws {
        let directory = try makeTemporaryDirectory("nbdsparse")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("disk.img").path
        let data = pattern(256 << 10, seed: 4)
        // 8 MiB with data only at 1 MiB..<1.25 MiB.
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        _ = ftruncate(fd, 8 << 20)
        _ = pwrite(fd, data.pointer, data.count, 1 << 20)
        close(fd)
        let device = try FileBlockDevice(path: path)
        let rig = try await ServerRig([NBDServerExport(device: device)])
        let client = try await NBDClient.connect(uri: rig.uri())
        let extents = try await client.blockStatus(at: 0, length: 8 << 20)
        let lengths: [UInt64] = [1 << 20, 256 << 10, 7 << 20 - 256 << 10]
        #expect(extents.map(\.length) == lengths)
        #expect(flags(extents) == [3, 0, 3])
        // A 4 MiB read crossing hole, data and hole comes back in hole and data chunks, byte-exact.
        let back = PageBuffer(pages: 1024)
        back.fill(0xee)
        try await client.read(at: 0, into: [back])
        #expect(back.slice(from: 0, count: 1 << 20).bytes.allSatisfy { $0 == 0 })
        #expect(back.slice(from: 1 << 20, count: 256 << 10).contentsEqual(data))
        #expect(back.slice(from: (1 << 20) + (256 << 10), count: 2816 << 10).bytes.allSatisfy { $0 == 0 })
        // Punching a hole through the server, then writing zeroes without one.
        try await client.trim(at: 1 << 20, length: 128 << 10)
        try await client.writeZeroes(at: (1 << 20) + (128 << 10), length: 128 << 10, noHole: true)
        let after = try await client.blockStatus(at: 1 << 20, length: 256 << 10)
        #expect(after.first?.flags == 3)
        await client.disconnect()
        await rig.stop()
    }

    @Test func longReadsOfACachedFileGoOutWithSendfileOrCopied() async throws {
        let directory = try makeTemporaryDirectory("nbdsendfile")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("disk.img").path
        // Pseudo-random bytes: a range sent from the wrong offset cannot match by a period of the pattern.
        var generator = SplitMix64(seed: 9)
        let data = PageBuffer(copying: generator.bytes(count: 4 << 20))
        try Data(data.bytes).write(to: URL(fileURLWithPath: path))
        // Default options (reads of 64 KiB and more from the page cache by sendfile), and copying only.
        for minimum in [64 << 10, nil] {
            let rig = try await ServerRig(
                [NBDServerExport(device: try FileBlockDevice(path: path))],
                options: NBDServerOptions(zeroCopyReadMinimum: minimum))
            let client = try await NBDClient.connect(uri: rig.uri())
            // Long and short reads in flight together, answered in any order, each byte-exact.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (offset, length) in [
                    (0, 1 << 20), (4096, 512 << 10), (3 << 20, 1 << 20), (512, 4096), (1 << 20, 64 << 10),
                ] {
                    group.addTask {
                        let back = PageBuffer(pages: (length + 4095) / 4096).slice(from: 0, count: length)
                        try await client.read(at: UInt64(offset), into: [back])
                        #expect(back.contentsEqual(data.slice(from: offset, count: length)))
                    }
                }
                try await group.waitForAll()
            }
            await client.disconnect()
            await rig.stop()
        }
    }

    @Test func writesFromAFileGoOutWithSendfileInPieces() async throws {
        let directory = try makeTemporaryDirectory("nbdwfile")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("source.img").path
        var generator = SplitMix64(seed: 5)
        let data = PageBuffer(copying: generator.bytes(count: 1 << 20))
        try Data(data.bytes).write(to: URL(fileURLWithPath: path))
        // A 64 KiB request limit: a 768 KiB range goes as 12 WRITEs, each a piece of the one lease.
        let rig = try await ServerRig([ServerRig.memory(4 << 20)], options: NBDServerOptions(maxPayload: 64 << 10))
        let client = try await NBDClient.connect(uri: rig.uri())
        let source = try FileBlockDevice(path: path)
        let given = Atomic<Int>(0)
        do {
            let lease = try #require(source.cachedFileRange(at: 512, count: 1536))
            try await client.write(
                at: 1 << 20,
                fromFile: FileRangeLease(descriptor: lease.descriptor, offset: lease.offset, count: lease.count) {
                    _ = lease
                    given.add(1, ordering: .relaxed)
                })
        }
        #expect(given.load(ordering: .relaxed) == 1)  // given back once every piece was sent
        let back = PageBuffer(pages: 192)
        try await client.read(at: 1 << 20, into: [back])
        #expect(back.contentsEqual(data.slice(from: 256 << 10, count: 768 << 10)))
        // Out of range: refused before anything is sent.
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        await #expect(throws: NBDError.self) {
            try await client.write(at: 4 << 20, fromFile: FileRangeLease(descriptor: fd, offset: 0, count: 4096) {})
        }
        await client.disconnect()
        await rig.stop()
    }

    @Test func oddSizedExportAndSeveralExports() async throws {
        let odd = NBDServerExport(
            name: "odd", description: "one byte past a megabyte",
            device: MemoryBlockDevice(sizeSectors: 1_048_577, sectorSize: 1))
        let rig = try await ServerRig([
            ServerRig.memory(1 << 20, name: "disk"), odd, ServerRig.memory(1 << 20, name: "ro", readOnly: true),
        ])
        let client = try await NBDClient.connect(uri: rig.uri("odd"))
        #expect(client.size == 1_048_577 && client.session.blockSize.minimum == 1)
        #expect(client.session.description == "one byte past a megabyte")
        // The last byte is reachable byte-addressed; the sector view rounds down.
        let tail = PageBuffer(copying: [1, 2, 3])
        try await client.write(at: 1_048_574, from: [tail])
        let back = PageBuffer(pages: 1).slice(from: 0, count: 3)
        try await client.read(at: 1_048_574, into: [back])
        #expect(back.bytes == [1, 2, 3])
        #expect(await client.blockDevice.info().sizeSectors == 2048)
        await client.disconnect()
        // The seed's negotiate on a channel we opened: a named export, its size and flags.
        let channel = try await NBDChannel.connect(to: .unix(path: rig.socketPath))
        let (disk, size, flags) = try await NBDClient.negotiate(channel, export: "ro")
        #expect(size == 1 << 20 && flags.contains(.readOnly))
        await #expect(throws: NBDError.readOnly) { try await disk.write(at: 0, from: [PageBuffer(pages: 1)]) }
        await disk.disconnect()
        // Unknown export: GO is refused with the spec's error.
        await #expect(throws: NBDError.optionRejected(option: .go, .unknownExport)) {
            try await NBDClient.connect(uri: rig.uri("nope"))
        }
        let list = try await NBDClient.listWithDescriptions(NBDChannel.connect(to: .unix(path: rig.socketPath))).get()
        #expect(list.map(\.name) == ["disk", "odd", "ro"] && list[1].description == "one byte past a megabyte")
        #expect(await rig.waitIdle())
        await rig.stop()
    }

    @Test func listReportsPolicyAndTLSAndClosesItsSocket() async throws {
        var options = NBDServerOptions()
        options.allowList = false
        let rig = try await ServerRig([ServerRig.memory(1 << 20)], options: options)
        let refused = await NBDClient.list(try await NBDChannel.connect(to: .unix(path: rig.socketPath)))
        #expect(refused.failureValue == .policy)
        #expect(await rig.waitIdle())
        await rig.stop()

        let certificates = FileManager.default.temporaryDirectory.appendingPathComponent("nbdtls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: certificates, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: certificates) }
        try makeCertificates(in: certificates)
        let tls = try await ServerRig(
            [ServerRig.memory(1 << 20, name: "secret")],
            options: NBDServerOptions(tls: NBDServerTLS(certificatesDirectory: certificates.path)))
        let plain = await NBDClient.list(try await NBDChannel.connect(to: .unix(path: tls.socketPath)))
        #expect(plain.failureValue == .tlsRequired)
        let secured = await NBDClient.list(
            try await NBDChannel.connect(to: .unix(path: tls.socketPath)),
            tls: NBDTLSOptions(caFile: certificates.path + "/ca-cert.pem", hostname: "localhost"))
        #expect(try secured.get() == ["secret"])
        // A whole session under TLS, and the plaintext client refused.
        let query = "tls-certificates=\(certificates.path)&tls-hostname=localhost"
        let client = try await NBDClient.connect(uri: tls.uri("secret", tls: true, query: query))
        #expect(client.session.tls && client.session.extendedHeaders)
        let data = pattern(256 << 10, seed: 8)
        try await client.write(at: 4096, from: [data])
        let back = PageBuffer(pages: 64)
        try await client.read(at: 4096, into: [back])
        #expect(back.contentsEqual(data))
        // A write from a file under TLS (no sendfile there: the range is read into pages first).
        let file = certificates.appendingPathComponent("data.bin").path
        let other = pattern(64 << 10, seed: 3)
        try Data(other.bytes).write(to: URL(fileURLWithPath: file))
        let fd = open(file, O_RDONLY)
        try await client.write(at: 8192, fromFile: FileRangeLease(descriptor: fd, offset: 0, count: 64 << 10) {})
        close(fd)
        let fromFile = PageBuffer(pages: 16)
        try await client.read(at: 8192, into: [fromFile])
        #expect(fromFile.contentsEqual(other))
        await client.disconnect()
        await #expect(throws: NBDError.optionRejected(option: .go, .tlsRequired)) {
            try await NBDClient.connect(uri: tls.uri("secret"))
        }
        #expect(await tls.waitIdle())
        await tls.stop()
    }

    @Test func repliesGoOutOfOrderAndShutdownFinishesInFlight() async throws {
        let device = GatedFlushDevice(sizeSectors: 2048)
        let rig = try await ServerRig([NBDServerExport(device: device)])
        let client = try await NBDClient.connect(uri: rig.uri())
        let flush = Task { try await client.flush() }
        while await device.flushesStarted == 0 { try await Task.sleep(for: .milliseconds(5)) }
        // The flush is held by the device; a read sent after it is answered first.
        let buffer = PageBuffer(pages: 1)
        try await client.read(at: 0, into: [buffer])
        await device.release()
        try await flush.value
        // Shutdown: the connection closes once idle, and the client sees it.
        await rig.server.shutdown()
        await #expect(throws: NBDError.self) { try await client.read(at: 0, into: [buffer]) }
        await client.disconnect()
        await rig.stop()
    }
}

extension Result {
    /// The error, or nil on success.
    var failureValue: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
