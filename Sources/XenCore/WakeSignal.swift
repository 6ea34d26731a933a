#if canImport(Glibc)
    package import Glibc
#elseif canImport(Musl)
    package import Musl
#elseif canImport(Darwin)
    package import Darwin
#endif

/// The one wake-up mechanism of SwiftXen's I/O threads, each running a ``PollLoop`` (XenStoreClient's
/// transport, NBDClient's direct connections, NBDServer's connections, the ``IOReactor`` shared by the
/// event-channel devices, NBDServer's listeners and NetBack's TAP readers): a non-blocking, close-on-exec pipe
/// whose read end is entry 0 of the loop's `poll` set. Any thread may `signal`; the loop `drain`s after `poll`
/// reports it readable. Both ends are closed when the last holder lets go, so a thread that still polls the
/// read end never sees its number reused.
package final class WakeSignal: Sendable {
    /// The read end: poll it for `POLLIN`.
    package let descriptor: Int32
    private let writer: Int32

    /// A new pipe; throws the errno of `pipe(2)` (descriptors exhausted).
    package init() throws(WakeSignalError) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw WakeSignalError(errno: errno) }
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        descriptor = ends[0]
        writer = ends[1]
    }

    deinit {
        close(descriptor)
        close(writer)
    }

    /// Makes the read end readable (a full pipe is already readable: the byte is then dropped).
    package func signal() {
        var one: UInt8 = 1
        _ = write(writer, &one, 1)
    }

    /// Empties the pipe (after `poll` said it is readable).
    package func drain() {
        var sink = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while read(descriptor, &sink, MemoryLayout.size(ofValue: sink)) == MemoryLayout.size(ofValue: sink) {}
    }

    /// An entry for a `poll` set watching the read end.
    package var pollEntry: pollfd { pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0) }
}

/// `pipe(2)` failed while making a ``WakeSignal``.
package struct WakeSignalError: Error, Equatable {
    package let errno: Int32
}
