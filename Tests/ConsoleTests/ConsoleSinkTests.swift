import ConsoleBackend
import Foundation
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The interactive sinks, over an in-process console pair: bytes reach a real socket client / pty reader,
/// and typed bytes reach the guest.
@Suite struct ConsoleSinkTests {
    /// Reads from a blocking fd until `count` bytes arrived (on a thread, not the cooperative pool).
    static func readExactly(_ fd: Int32, count: Int) async -> [UInt8] {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var result: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while result.count < count {
                    let got = read(fd, &buffer, min(buffer.count, count - result.count))
                    if got < 0 && errno == EINTR { continue }
                    if got <= 0 { break }
                    result += buffer[..<got]
                }
                continuation.resume(returning: result)
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if written <= 0 { return }
            offset += written
        }
    }

    @Test func unixSocketSinkServesAClientBothWays() async throws {
        let pair = try ConnectedPair()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "con-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        ).path
        let sink = UnixSocketConsoleSink(path: path)
        let serving = Task { try await sink.serve(pair.backend) }
        // The guest prints before any client connects: the output waits (back-pressure), nothing is lost.
        let early = Pattern.bytes(count: 10_000, seed: 11)
        let writer = Task { try await pair.guest.write(early) }

        let address = try UnixSocketAddress(path: path)
        var fd: Int32 = -1
        while fd < 0 {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            if address.connect(fd) != 0 {
                close(fd)
                fd = -1
                await Task.yield()
            }
        }
        defer { close(fd) }
        #expect(await Self.readExactly(fd, count: early.count) == early)
        try await writer.value
        Self.writeAll(fd, Array("help\r".utf8))
        var typed: [UInt8] = []
        while typed.count < 5 { typed += try await pair.guest.read() }
        #expect(typed == Array("help\r".utf8))

        pair.backend.peerClosed()
        try await serving.value
        #expect(access(path, F_OK) != 0)  // the socket file is removed
    }

    @Test func ptySinkPublishesATerminalCarryingBothWays() async throws {
        let pair = try ConnectedPair()
        let sink = try PtyConsoleSink()
        let tty = try #require(sink.ttyPath)
        #expect(tty.hasPrefix("/dev/pts/"))
        let serving = Task { try await sink.serve(pair.backend) }
        let fd = open(tty, O_RDWR | O_NOCTTY)
        #expect(fd >= 0)
        defer { close(fd) }
        let output = Pattern.bytes(count: 20_000, seed: 12)
        async let written: Void = pair.guest.write(output)
        // Raw mode: bytes arrive unchanged (no CR/LF translation, no echo).
        #expect(await Self.readExactly(fd, count: output.count) == output)
        try await written
        Self.writeAll(fd, Array("ls -l\r".utf8))
        var typed: [UInt8] = []
        while typed.count < 6 { typed += try await pair.guest.read() }
        #expect(typed == Array("ls -l\r".utf8))
        pair.backend.peerClosed()
        try await serving.value
    }
}
