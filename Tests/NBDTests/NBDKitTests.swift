import BlockDevice
import Foundation
import NBDClient
import NBDProtocol
import Testing
import XenCore

/// A buffer of `count` bytes filled with a pattern derived from `seed`.
func pattern(_ count: Int, seed: UInt8) -> PageBuffer {
    let buffer = PageBuffer(pages: (count + 4095) / 4096).slice(from: 0, count: count)
    for index in 0..<count { buffer.setUInt8(UInt8(truncatingIfNeeded: index &* 7 &+ Int(seed)), at: index) }
    return buffer
}

@Suite("NBDClient against nbdkit", .serialized)
struct NBDKitTests {
    @Test func memoryUnixReadWriteAndBlockDevice() async throws {
        let server = try NBDKit(["memory", "size=8M"])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri())
        #expect(client.size == 8 << 20)
        #expect(client.session.structuredReplies)
        #expect(client.session.metaContexts["base:allocation"] != nil)
        #expect(!client.session.usedExportName)
        let device = client.blockDevice
        let info = await device.info()
        #expect(info.readWrite && info.sectorSize == 512 && info.sizeSectors == 16384)
        // Sector-addressed through the BlockDevice view, two buffers back to back; the same bytes through
        // the byte-addressed calls.
        let data = [pattern(4096, seed: 1), pattern(8192, seed: 2)]
        try await device.write(at: 8, from: data)
        let back = [PageBuffer(pages: 1), PageBuffer(pages: 2)]
        try await device.read(at: 8, into: back)
        #expect(back[0].contentsEqual(data[0]) && back[1].contentsEqual(data[1]))
        let bytes = PageBuffer(pages: 3)
        try await client.read(at: 8 * 512, into: [bytes])
        #expect(bytes.slice(from: 0, count: 4096).contentsEqual(data[0]))
        // Many requests in flight at once, larger than the 32 MiB split limit is not needed: 64 × 64 KiB.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<64 {
                group.addTask {
                    let buffer = pattern(65536, seed: UInt8(index))
                    try await client.write(at: UInt64(index) * 65536, from: [buffer])
                    let check = PageBuffer(pages: 16)
                    try await client.read(at: UInt64(index) * 65536, into: [check])
                    #expect(check.contentsEqual(buffer))
                }
            }
            try await group.waitForAll()
        }
        try await client.flush()
        try await device.flush()
        // Zeroes, trim, cache, block status.
        try await client.writeZeroes(at: 0, length: 65536, fua: true, noHole: true)
        let zero = PageBuffer(pages: 16)
        try await client.read(at: 0, into: [zero])
        #expect(zero.bytes.allSatisfy { $0 == 0 })
        try await client.trim(at: 1 << 20, length: 1 << 20)
        try await client.cache(at: 0, length: 4096)
        try await device.discard(at: 4096, count: 8)
        let extents = try await client.blockStatus(at: 4 << 20, length: 4 << 20)
        #expect(!extents.isEmpty)
        #expect(extents.allSatisfy { NBDAllocationFlags(rawValue: $0.flags).contains(.hole) })
        // Typed errors.
        await #expect(throws: NBDError.self) { try await client.read(at: 8 << 20, into: [PageBuffer(pages: 1)]) }
        await #expect(throws: BlockError.self) { try await device.read(at: 16384, into: [PageBuffer(pages: 1)]) }
        await client.disconnect()
        await #expect(throws: BlockError.disconnected) { try await device.read(at: 0, into: [PageBuffer(pages: 1)]) }
    }

    @Test func integrityAgainstNbdcopy() async throws {
        let server = try NBDKit(["memory", "size=4M"], listen: .tcp)
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri(), options: NBDClientOptions(connections: 4))
        #expect(client.connectionCount == 4)
        // SwiftXen writes; nbdcopy reads back into a file.
        let data = pattern(4 << 20, seed: 9)
        try await client.write(at: 0, from: [data])
        await client.disconnect()
        let file = server.directory.appendingPathComponent("out.img").path
        try runTool("/usr/bin/nbdcopy", [server.uri(), file])
        let copied = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect(copied == Data(data.bytes))
        // nbdcopy writes another pattern; SwiftXen reads it.
        let other = pattern(4 << 20, seed: 33)
        try Data(other.bytes).write(to: URL(fileURLWithPath: file))
        try runTool("/usr/bin/nbdcopy", [file, server.uri()])
        let reader = try await NBDClient.connect(uri: server.uri())
        let back = PageBuffer(pages: 1024)
        try await reader.read(at: 0, into: [back])
        #expect(back.contentsEqual(other))
        await reader.disconnect()
    }

    @Test func fileExportAndListAndSizeFromNbdinfo() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let image = directory.appendingPathComponent("disk.img")
        try Data(pattern(1 << 20, seed: 5).bytes).write(to: image)
        let server = try NBDKit(
            ["file", image.path, "exportname=alpha", "exportname=beta", "exportname-list=explicit"],
            extra: ["--filter=exportname"])
        defer { server.stop() }
        let channel = try await NBDChannel.connect(to: .unix(path: server.socketPath!))
        let names = try await NBDClient.list(channel).get()
        #expect(names == ["alpha", "beta"])
        let client = try await NBDClient.connect(uri: server.uri())
        let size = try runTool("/usr/bin/nbdinfo", ["--size", server.uri()])
        #expect(
            String(decoding: size, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "\(client.size)")
        let buffer = PageBuffer(pages: 256)
        try await client.read(at: 0, into: [buffer])
        #expect(buffer.contentsEqual(pattern(1 << 20, seed: 5)))
        await client.disconnect()
    }

    @Test func readOnlyExport() async throws {
        let server = try NBDKit(["memory", "size=1M"], extra: ["--read-only"])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri())
        #expect(client.flags.contains(.readOnly))
        await #expect(throws: BlockError.isReadOnly) {
            try await client.blockDevice.write(at: 0, from: [PageBuffer(pages: 1)])
        }
        await #expect(throws: NBDError.readOnly) { try await client.write(at: 0, from: [PageBuffer(pages: 1)]) }
        await client.disconnect()
    }

    @Test func blockSizeIsObeyed() async throws {
        let server = try NBDKit(
            ["memory", "size=1M", "blocksize-minimum=4096", "blocksize-maximum=65536", "blocksize-preferred=4096"],
            extra: ["--filter=blocksize-policy"])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri())
        #expect(client.session.blockSize.minimum == 4096)
        #expect(client.maxRequestBytes == 65536)
        #expect(await client.blockDevice.info().sectorSize == 4096)
        let data = pattern(1 << 20, seed: 3)
        try await client.write(at: 0, from: [data])  // split into 16 requests of 64 KiB
        let back = PageBuffer(pages: 256)
        try await client.read(at: 0, into: [back])
        #expect(back.contentsEqual(data))
        await #expect(throws: NBDError.self) {
            try await client.read(at: 0, into: [PageBuffer(pages: 1).slice(from: 0, count: 512)])
        }
        await client.disconnect()
    }

    @Test func tlsX509() async throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("nbdtls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: certs, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: certs) }
        try makeCertificates(in: certs)
        for listen in [NBDKit.Listen.tcp, .unix] {
            let server = try NBDKit(
                ["memory", "size=1M"], listen: listen, extra: ["--tls=require", "--tls-certificates=\(certs.path)"])
            defer { server.stop() }
            let query = "tls-certificates=\(certs.path)" + (listen == .unix ? "&tls-hostname=localhost" : "")
            let client = try await NBDClient.connect(uri: server.uri(tls: true, query: query))
            #expect(client.session.tls)
            let data = pattern(65536, seed: 77)
            try await client.write(at: 4096, from: [data])
            let back = PageBuffer(pages: 16)
            try await client.read(at: 4096, into: [back])
            #expect(back.contentsEqual(data))
            await client.disconnect()
            // Plain nbd:// to a TLS-only server: refused, typed.
            await #expect(throws: NBDError.optionRejected(option: .go, .tlsRequired)) {
                try await NBDClient.connect(uri: server.uri())
            }
            // Wrong CA: the certificate check fails.
            await #expect(throws: NBDError.self) {
                try await NBDClient.connect(
                    uri: server.uri(tls: true, query: "tls-ca-file=\(certs.path)/other-ca.pem&tls-hostname=localhost"))
            }
            // Wrong hostname: the hostname check fails.
            await #expect(throws: NBDError.self) {
                try await NBDClient.connect(
                    uri: server.uri(tls: true, query: "tls-certificates=\(certs.path)&tls-hostname=wrong.example"))
            }
        }
        // nbds:// to a plaintext-only server never falls back.
        let plain = try NBDKit(["memory", "size=1M"], extra: ["--tls=off"])
        defer { plain.stop() }
        await #expect(throws: NBDError.self) {
            try await NBDClient.connect(
                uri: plain.uri(tls: true, query: "tls-certificates=\(certs.path)&tls-hostname=localhost"))
        }
    }
}
