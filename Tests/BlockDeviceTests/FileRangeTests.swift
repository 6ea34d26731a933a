import BlockDevice
import Foundation
import Synchronization
import Testing
import XenCore

/// Zero-copy sends: a file device lends cached ranges of its file, and the socket output queue sends them
/// with `sendfile` between gathered messages, gives each lease back once, and fails the stream when the file
/// ends early; payloads held in a ``SplicePipe`` go out with `splice` the same way. (Needs Linux ≥ 6.5 for `cachestat`, as the machines this package is built on have.)
@Suite struct FileRangeTests {
    /// A temporary file of `count` pseudo-random bytes (written, so in the page cache).
    private static func file(_ count: Int) throws -> (path: String, bytes: [UInt8]) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("range-\(UUID().uuidString)").path
        var generator = SplitMix64(seed: 7)
        let bytes = generator.bytes(count: count)
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

    /// A sequential reader that stops part-way leaves pages read ahead of it in the cache: every page the
    /// page cache holds (as `mincore` sees it) is read without waiting. (RWF_NOWAIT alone refuses cached
    /// pages that carry a readahead mark — half of a server's random reads on a file several readers shared,
    /// measured with strace; this pass does not reliably leave such marks, so it checks the outcome only.)
    @Test func everyCachedPageIsReadWithoutWaitingAfterAPartialSequentialPass() throws {
        let (path, bytes) = try Self.file(4 << 20)
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        // Out of the cache (clean after fsync), then the first MiB read in order, as a sequential reader does.
        _ = fsync(fd)
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        for offset in stride(from: 0, to: 1 << 20, by: chunk.count) {
            _ = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        }
        usleep(200_000)  // the readahead it started completes
        let pages = bytes.count / 4096
        let map = try #require(mmap(nil, bytes.count, PROT_READ, MAP_SHARED, fd, 0))
        defer { munmap(map, bytes.count) }
        var resident = [UInt8](repeating: 0, count: pages)
        #expect(mincore(map, bytes.count, &resident) == 0)
        let cached = resident.indices.filter { resident[$0] & 1 != 0 }
        #expect(cached.count > 256)  // the first MiB and readahead beyond it
        let device = try FileBlockDevice(path: path)
        let page = PageBuffer(pages: 1)
        var refused: [Int] = []
        for index in cached {
            if !device.readWithoutWaiting(at: UInt64(index * 8), into: [page]) {
                refused.append(index)
            } else if page.bytes != Array(bytes[(index * 4096)..<((index + 1) * 4096)]) {
                Issue.record("page \(index) read back wrong")
            }
        }
        #expect(refused.isEmpty, "cached pages refused: \(refused.prefix(8))… (\(refused.count))")
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

    @Test func aPipeHoldsAppendsAndZeroesInOrder() throws {
        let pipe = try SplicePipe(capacity: 64 << 10)
        #expect(pipe.capacity >= 64 << 10 && pipe.count == 0)
        let bytes: [UInt8] = [1, 2, 3, 4, 5]
        #expect(bytes.withUnsafeBytes { pipe.append($0) })
        #expect(pipe.appendZeroes(3000))
        #expect(pipe.count == 3005)
        let back = PageBuffer(pages: 1).slice(from: 0, count: 3005)
        #expect(pipe.take(into: back))
        #expect(back.bytes == bytes + [UInt8](repeating: 0, count: 3000))
        // Taking more than it holds fails instead of waiting; discard drops without reading.
        #expect(!pipe.take(into: PageBuffer(pages: 1)))
        #expect(pipe.appendZeroes(10_000))
        #expect(pipe.discard(4000) == 4000 && pipe.count == 6000)
        #expect(pipe.discard() == 6000 && pipe.count == 0)
        // More than its capacity does not fit: append reports it rather than blocking.
        #expect(!pipe.appendZeroes(pipe.capacity + 4096))
    }

    @Test func pipesGoOutBetweenMessagesAndAreEmptiedBySending() throws {
        let (path, bytes) = try Self.file(1 << 20)
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        // 1 MiB in the pipe (more than a socket buffer: several flushes, resuming inside the payload).
        let pipe = try SplicePipe(capacity: 1 << 20)
        #expect(bytes.withUnsafeBytes { pipe.append($0) })
        var queue = SocketOutputQueue()
        queue.append(header: [1, 2], payload: [PageBuffer(copying: [7, 7, 7])])
        queue.append(header: [3], pipe: pipe, count: 1 << 20)
        queue.append(header: [4], payload: [])
        let expected = [1, 2, 7, 7, 7, 3] + bytes + [4]
        let (received, failed) = Self.drain(&queue, count: expected.count)
        #expect(failed == 0)
        #expect(received == expected)
        #expect(queue.isEmpty && pipe.count == 0)
    }

    @Test func aPipeHoldingLessThanQueuedFailsTheStreamInsteadOfWaiting() throws {
        let pipe = try SplicePipe(capacity: 64 << 10)
        #expect(pipe.appendZeroes(100))
        var queue = SocketOutputQueue()
        queue.append(header: [5], pipe: pipe, count: 4096)
        let (received, failed) = Self.drain(&queue, count: 1 + 4096)
        #expect(failed == EIO && queue.failed == EIO)
        #expect(received == [5] + [UInt8](repeating: 0, count: 100))
    }
}
