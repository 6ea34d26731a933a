import BlockDevice
import Foundation
import Synchronization
import Testing
import XenCore

/// Zero-copy sends: a file device lends cached ranges of its file, and the socket output queue sends them
/// with `sendfile` between gathered messages, gives each lease back once, and fails the stream when the file
/// ends early. (Needs Linux ≥ 6.5 for `cachestat`, as the machines this package is built on have.)
@Suite struct FileRangeTests {
    /// A temporary file of `count` pseudo-random bytes (written, so in the page cache).
    private static func file(_ count: Int) throws -> (path: String, bytes: [UInt8]) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("range-\(UUID().uuidString)").path
        var generator = SplitMix64(seed: 7)
        let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, bytes)
    }

    /// Flushes `queue` into one end of a socket pair while reading the other, until `count` bytes arrived or
    /// the queue failed.
    private static func drain(_ queue: inout SocketOutputQueue, count: Int) -> (bytes: [UInt8], failed: Int32) {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { return ([], errno) }
        defer { for end in ends { close(end) } }
        // Both ends non-blocking, as the queue's users keep their sockets: sendfile has no MSG_DONTWAIT.
        for end in ends { _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var failed: Int32 = 0
        while received.count < count {
            if failed == 0 { failed = queue.flush(to: ends[0]) }
            let got = chunk.withUnsafeMutableBytes { read(ends[1], $0.baseAddress, $0.count) }
            if got > 0 {
                received += chunk[0..<got]
            } else if queue.isEmpty || failed != 0 {
                break
            }
        }
        return (received, failed)
    }

    @Test func cachedRangesAreLentOnlyInsideTheDevice() throws {
        let (path, _) = try Self.file(1 << 20)
        defer { unlink(path) }
        let device = try FileBlockDevice(path: path)
        let lease = try #require(device.cachedFileRange(at: 8, count: 1024))
        #expect(lease.offset == 4096 && lease.count == 512 << 10 && lease.descriptor >= 0)
        #expect(device.cachedFileRange(at: 2040, count: 16) == nil)  // past the end
        #expect(device.cachedFileRange(at: 0, count: 0) == nil)
        #expect(device.cachedFileRange(at: UInt64.max - 1, count: 4) == nil)  // overflowing
    }

    @Test func fileRangesGoOutBetweenMessagesAndAreGivenBackOnce() throws {
        let (path, bytes) = try Self.file(1 << 20)
        defer { unlink(path) }
        let device = try FileBlockDevice(path: path)
        let given = Atomic<Int>(0)
        var queue = SocketOutputQueue()
        let page = PageBuffer(copying: [UInt8](repeating: 0xab, count: 4096))
        queue.append(header: [1, 2, 3], payload: [page])
        do {
            // Larger than a socket buffer: sent over several flushes, resuming inside the range.
            let lease = try #require(device.cachedFileRange(at: 2, count: 1536))
            queue.append(
                header: [4, 5],
                file: FileRangeLease(descriptor: lease.descriptor, offset: lease.offset, count: lease.count) {
                    _ = lease
                    given.add(1, ordering: .relaxed)
                })
        }
        queue.append(header: [6], payload: [])
        let expected = [1, 2, 3] + page.bytes + [4, 5] + Array(bytes[1024..<(1024 + (768 << 10))]) + [6]
        let (received, failed) = Self.drain(&queue, count: expected.count)
        #expect(failed == 0)
        #expect(received == expected)
        #expect(queue.isEmpty && queue.queuedBytes == 0)
        #expect(given.load(ordering: .relaxed) == 1)
    }

    @Test func aDroppedQueueGivesItsLeasesBack() throws {
        let given = Atomic<Int>(0)
        do {
            var queue = SocketOutputQueue()
            queue.append(
                header: [1],
                file: FileRangeLease(descriptor: -1, offset: 0, count: 10) { given.add(1, ordering: .relaxed) })
            #expect(queue.queuedBytes == 11)
        }
        #expect(given.load(ordering: .relaxed) == 1)
    }

    @Test func aFileThatEndsEarlyFailsTheStream() throws {
        let (path, bytes) = try Self.file(8192)
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var queue = SocketOutputQueue()
        // The lease claims 4096 bytes past the file's end: the header and the first 4096 bytes go, then EIO.
        queue.append(header: [9], file: FileRangeLease(descriptor: fd, offset: 4096, count: 8192) {})
        let (received, failed) = Self.drain(&queue, count: 1 + 8192)
        #expect(failed == EIO && queue.failed == EIO)
        #expect(received == [9] + bytes[4096...])
    }
}
