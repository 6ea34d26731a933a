import Foundation
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// XenCore's helpers written once for the whole package: scatter/gather over buffer lists, unix socket
/// addresses, the monotonic clock.
@Suite struct SharedHelperTests {
    private static func buffer(_ bytes: [UInt8]) -> PageBuffer { PageBuffer(copying: bytes) }

    @Test func copyBetweenListsCrossesEveryBoundary() {
        let sources = [Self.buffer([1, 2, 3]), Self.buffer([]), Self.buffer([4, 5]), Self.buffer([6, 7, 8, 9])]
        let destinations = [
            PageBuffer(pages: 1).slice(from: 0, count: 4), PageBuffer(pages: 1).slice(from: 0, count: 7),
        ]
        #expect(PageBuffer.copy(from: sources, to: destinations) == 9)
        #expect(destinations[0].bytes == [1, 2, 3, 4])
        #expect(destinations[1].bytes == [5, 6, 7, 8, 9, 0, 0])
    }

    @Test func copyStopsAtTheShorterSide() {
        let flat = PageBuffer(pages: 1).slice(from: 0, count: 3)
        #expect(PageBuffer.copy(from: [Self.buffer([1, 2]), Self.buffer([3, 4])], to: [flat]) == 3)
        #expect(flat.bytes == [1, 2, 3])
    }

    @Test func slicesCoverTheRangeAndStopAtTheEnd() {
        let buffers = [Self.buffer([1, 2, 3]), Self.buffer([4, 5]), Self.buffer([6, 7, 8])]
        #expect(PageBuffer.slices(of: buffers, from: 2, count: 4).map(\.bytes) == [[3], [4, 5], [6]])
        #expect(PageBuffer.slices(of: buffers, from: 6, count: 10).map(\.bytes) == [[7, 8]])
        #expect(PageBuffer.slices(of: buffers, from: 8, count: 0).isEmpty)
        #expect(PageBuffer.slices(of: [Self.buffer([1, 2])], from: 1, count: 5).map(\.bytes) == [[2]])
    }

    @Test func aSocketPathThatDoesNotFitIsRefused() {
        let long = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: UnixSocketAddress.InvalidPath.self) { _ = try UnixSocketAddress(path: long) }
        #expect(throws: UnixSocketAddress.InvalidPath.self) { _ = try UnixSocketAddress(path: "a\0b") }
        #expect((try? UnixSocketAddress(path: String(repeating: "y", count: 107))) != nil)
    }

    @Test func anAddressBindsAndConnects() throws {
        let path = NSTemporaryDirectory() + "xencore-\(UUID().uuidString.prefix(8)).sock"
        defer { unlink(path) }
        let address = try UnixSocketAddress(path: path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        #expect(address.bind(listener) == 0)
        #expect(listen(listener, 1) == 0)
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        #expect(address.connect(client) == 0)
    }

    @Test func theMonotonicClockNeverGoesBack() {
        let first = MonotonicClock.nanoseconds()
        usleep(1000)
        #expect(MonotonicClock.nanoseconds() > first)
    }
}
