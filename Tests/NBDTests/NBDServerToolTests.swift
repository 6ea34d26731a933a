import BlockDevice
import Foundation
import NBDServer
import Testing
import XenCore

/// NBDServer against the real clients people use: libnbd's nbdinfo and nbdcopy (plain and TLS), qemu-img,
/// qemu-nbd --list, fio's nbd engine, and libnbd's Python bindings for the commands the tools never send.
@Suite("NBDServer against real NBD clients", .serialized)
struct NBDServerToolTests {
    /// An 8 MiB sparse file with data only at 1 MiB..<1.25 MiB.
    private static func sparseFile(in directory: URL) throws -> (path: String, data: PageBuffer) {
        let path = directory.appendingPathComponent("disk.img").path
        let data = pattern(256 << 10, seed: 11)
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        _ = ftruncate(fd, 8 << 20)
        _ = pwrite(fd, data.pointer, data.count, 1 << 20)
        return (path, data)
    }

    private func rig(_ directory: URL, options: NBDServerOptions = NBDServerOptions()) async throws -> ServerRig {
        let (path, _) = try Self.sparseFile(in: directory)
        return try await ServerRig(
            [
                NBDServerExport(name: "disk", description: "the disk", device: try FileBlockDevice(path: path)),
                ServerRig.memory(4 << 20, name: "scratch"),
            ], options: options)
    }

    private func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdtools-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func nbdinfoShowsFlagsMapAndList() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let rig = try await rig(directory)
        let json = try await tool("/usr/bin/nbdinfo", ["--json", rig.uri("disk")])
        #expect(json.status == 0, "\(json.errors)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        let export = try #require((document["exports"] as? [[String: Any]])?.first)
        #expect(document["protocol"] as? String == "newstyle-fixed" && document["structured"] as? Bool == true)
        #expect(export["export-size"] as? Int == 8 << 20)
        for flag in [
            "can_multi_conn", "can_fast_zero", "can_zero", "can_trim", "can_flush", "can_fua", "can_cache", "can_df",
        ] {
            #expect(export[flag] as? Bool == true, "\(flag)")
        }
        #expect(export["is_read_only"] as? Bool == false)
        #expect(export["contexts"] as? [String] == ["base:allocation"])
        #expect(export["block_size_minimum"] as? Int == 512 && export["block_size_maximum"] as? Int == 32 << 20)
        let map = try await tool("/usr/bin/nbdinfo", ["--map", rig.uri("disk")])
        let rows = map.output.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
        #expect(rows == ["0 1048576 3 hole,zero", "1048576 262144 0 data", "1310720 7077888 3 hole,zero"])
        let list = try await tool("/usr/bin/nbdinfo", ["--list", rig.uri()])
        #expect(list.output.contains("export=\"disk\":") && list.output.contains("export=\"scratch\":"))
        #expect(list.output.contains("description: the disk"))
        let size = try await tool("/usr/bin/nbdinfo", ["--size", rig.uri("scratch")])
        #expect(size.output == "4194304\n")
        await rig.stop()
    }

    @Test func nbdcopyBothWaysAndQemuImg() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let rig = try await rig(directory)
        // A 4 MiB source with data in its first and last megabytes and a hole between.
        let source = directory.appendingPathComponent("source.img").path
        var bytes = Data(pattern(1 << 20, seed: 1).bytes) + Data(count: 2 << 20) + Data(pattern(1 << 20, seed: 2).bytes)
        try bytes.write(to: URL(fileURLWithPath: source))
        let scratch = rig.uri("scratch")
        // nbdcopy into our server (multi-conn, zeroing the hole) and back out, with a final flush.
        #expect(try await tool("/usr/bin/nbdcopy", ["--flush", source, scratch]).status == 0)
        let back = directory.appendingPathComponent("back.img").path
        #expect(try await tool("/usr/bin/nbdcopy", [scratch, back]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: back)) == bytes)
        // qemu-img reads and compares through its own client.
        let compare = try await tool("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", source, scratch])
        #expect(compare.status == 0, "\(compare.output)\(compare.errors)")
        let converted = directory.appendingPathComponent("converted.img").path
        #expect(
            try await tool("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "raw", scratch, converted]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: converted)) == bytes)
        // qemu-img writes into the existing export (-n) and the bytes land.
        bytes.replaceSubrange(0..<(1 << 20), with: pattern(1 << 20, seed: 3).bytes)
        try bytes.write(to: URL(fileURLWithPath: source))
        let written = try await tool(
            "/usr/bin/qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", source, scratch])
        #expect(written.status == 0, "\(written.errors)")
        #expect(
            try await tool("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", source, scratch]).status == 0)
        // A difference is seen as one.
        let other = try await tool("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", back, scratch])
        #expect(other.status == 1)
        await rig.stop()
    }

    @Test func qemuNbdListAndFioVerify() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let rig = try await rig(directory)
        let list = try await tool("/usr/bin/qemu-nbd", ["--list", "-k", rig.socketPath])
        #expect(list.status == 0, "\(list.errors)")
        for text in [
            "exports available: 2", "export: 'disk'", "description: the disk", "size:  8388608", "multi", "fast-zero",
            "min block: 512", "base:allocation",
        ] {
            #expect(list.output.contains(text), "\(text) in \(list.output)")
        }
        // fio writes and reads random 4 KiB blocks 16 at a time and checks every block it reads back.
        let fio = try await tool(
            "/usr/bin/fio",
            [
                "--name=verify", "--ioengine=nbd", "--uri=\(rig.uri("scratch"))", "--rw=randwrite", "--bs=4k",
                "--iodepth=16", "--size=4M", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                "--output-format=json", "--verify_state_save=0",
            ])
        #expect(fio.status == 0, "\(fio.errors)")
        #expect(fio.output.contains("\"error\" : 0"))
        await rig.stop()
    }

    @Test func libnbdCommandsTheToolsNeverSend() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let rig = try await rig(directory)
        // FUA writes, CACHE, TRIM, WRITE_ZEROES with FAST_ZERO and NO_HOLE, FLUSH, BLOCK_STATUS, and a
        // structured read whose chunks are recorded (hole chunks for the holes).
        let script = """
            import json, nbd
            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_uri("\(rig.uri("disk"))")
            out = {"multi": h.can_multi_conn(), "fast_zero": h.can_fast_zero(), "cache": h.can_cache()}
            h.pwrite(b"\\x5a" * 65536, 3 << 20, nbd.CMD_FLAG_FUA)
            h.cache(1 << 20, 0)
            h.zero(65536, 4 << 20, nbd.CMD_FLAG_FAST_ZERO)
            h.zero(65536, 5 << 20, nbd.CMD_FLAG_NO_HOLE)
            h.trim(65536, 3 << 20)
            h.flush()
            chunks = []
            def chunk(buf, offset, status, err):
                chunks.append([status, offset, len(buf)])
                return 0
            buf = h.pread_structured(2 << 20, 0, chunk)
            out["chunks"] = chunks
            out["data"] = buf[1 << 20:(1 << 20) + 4] == bytes(open("\(directory.path)/disk.img", "rb").read()[1 << 20:(1 << 20) + 4])
            extents = []
            h.block_status(8 << 20, 0, lambda ctx, off, ents, err: extents.extend(ents) or 0)
            out["extents"] = extents
            h.shutdown()
            print(json.dumps(out))
            """
        let result = try await tool("/usr/bin/python3", ["-c", script])
        #expect(result.status == 0, "\(result.errors)")
        let values = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(
            values["multi"] as? Bool == true && values["fast_zero"] as? Bool == true && values["data"] as? Bool == true)
        // READ_HOLE (2) and READ_DATA (1) chunks of the sparse 2 MiB read.
        #expect(values["chunks"] as? [[Int]] == [[2, 0, 1 << 20], [1, 1 << 20, 256 << 10], [2, 1_310_720, 786_432]])
        // Trimmed 3 MiB..+64 KiB: a hole again; zeroed 4 MiB with FAST_ZERO: a hole; 5 MiB with NO_HOLE: data.
        let extents = try #require(values["extents"] as? [Int])
        var map: [(Int, Int, Int)] = []
        var at = 0
        for index in stride(from: 0, to: extents.count - 1, by: 2) {
            map.append((at, extents[index], extents[index + 1]))
            at += extents[index]
        }
        #expect(map.first { $0.0 == 5 << 20 }?.2 == 0, "\(map)")
        #expect(!map.contains { $0.0 <= 3 << 20 && $0.0 + $0.1 > 3 << 20 && $0.2 == 0 }, "\(map)")
        #expect(!map.contains { $0.0 <= 4 << 20 && $0.0 + $0.1 > 4 << 20 && $0.2 == 0 }, "\(map)")
        await rig.stop()
    }

    @Test func libnbdAndQemuOverTLS() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try makeCertificates(in: directory)
        let rig = try await rig(
            directory, options: NBDServerOptions(tls: NBDServerTLS(certificatesDirectory: directory.path)))
        let secure = rig.uri("scratch", tls: true, query: "tls-certificates=\(directory.path)")
        let info = try await tool("/usr/bin/nbdinfo", ["--json", secure])
        #expect(info.status == 0, "\(info.errors)")
        #expect(info.output.contains("\"TLS\": true"))
        // nbdcopy in and out under TLS.
        let source = directory.appendingPathComponent("tls-source.img").path
        let bytes = Data(pattern(4 << 20, seed: 21).bytes)
        try bytes.write(to: URL(fileURLWithPath: source))
        #expect(try await tool("/usr/bin/nbdcopy", [source, secure]).status == 0)
        let back = directory.appendingPathComponent("tls-back.img").path
        #expect(try await tool("/usr/bin/nbdcopy", [secure, back]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: back)) == bytes)
        // Without TLS nothing is given away.
        #expect(try await tool("/usr/bin/nbdinfo", [rig.uri("scratch")]).status != 0)
        #expect(try await tool("/usr/bin/nbdinfo", ["--list", rig.uri()]).status != 0)
        // qemu's client with x509 credentials lists the exports.
        let list = try await tool(
            "/usr/bin/qemu-nbd",
            [
                "--list", "-k", rig.socketPath, "--object",
                "tls-creds-x509,id=tls0,endpoint=client,dir=\(directory.path)",
                "--tls-creds", "tls0", "--tls-hostname", "localhost",
            ])
        #expect(list.status == 0 && list.output.contains("export: 'scratch'"), "\(list.errors)")
        await rig.stop()
    }
}
