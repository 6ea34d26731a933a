import Testing
import Vchan
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The relay behind `swiftxen vchan`: file descriptors (here pipes) on one side, the vchan on the other.
@Suite struct VchanRelayTests {
    /// A pipe: (read end, write end).
    private func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw Timeout(description: "pipe: errno \(errno)") }
        return (fds[0], fds[1])
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) async {
        await BlockingPool.shared.run(mayBlockIndefinitely: true) {
            var offset = 0
            while offset < bytes.count {
                let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                guard count > 0 else { return }
                offset += count
            }
        }
    }

    private func readAll(_ fd: Int32, count: Int) async -> [UInt8] {
        await BlockingPool.shared.run(mayBlockIndefinitely: true) {
            var result: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while result.count < count {
                let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard got > 0 else { break }
                result += buffer.prefix(got)
            }
            return result
        }
    }

    @Test func pipesBothWaysUntilThePeerCloses() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), readSize: 4096, writeSize: 8192)
        let input = try makePipe()
        let output = try makePipe()
        let relay = Task { try await clientEnd.relay(input: input.read, output: output.write) }
        let up = patternBytes(count: 300_000, seed: 1)
        let down = patternBytes(count: 200_000, seed: 2)
        try await within(120, "relay") {
            async let fed: Void = writeAll(input.write, up)
            async let printed = readAll(output.read, count: down.count)
            async let sent: Void = serverEnd.write(down)
            #expect(try await serverEnd.read(exactly: up.count) == up)
            try await sent
            #expect(await printed == down)
            await fed
        }
        // Input ended: the relay only stops sending and keeps printing until the peer closes.
        close(input.write)
        try await serverEnd.write([1, 2, 3])
        #expect(await readAll(output.read, count: 3) == [1, 2, 3])
        await serverEnd.close()
        #expect(try await within(60, "relay end") { try await relay.value } == .peerClosed)
        await clientEnd.close()
        for fd in [input.read, output.read, output.write] { close(fd) }
    }

    @Test func closeOnInputEnd() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain())
        let input = try makePipe()
        let output = try makePipe()
        let relay = Task {
            try await clientEnd.relay(input: input.read, output: output.write, closeOnInputEnd: true)
        }
        await writeAll(input.write, Array("last words\n".utf8))
        close(input.write)
        #expect(try await within(60, "relay end") { try await relay.value } == .inputEnded)
        #expect(try await drain(serverEnd) == Array("last words\n".utf8), "delivered before the close")
        await serverEnd.close()
        for fd in [input.read, output.read, output.write] { close(fd) }
    }
}
