#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A kernel pipe that carries one payload at a time between two descriptors with `splice(2)`: bytes spliced
/// into it from a socket and out of it to another socket (or `/dev/null`) move as page references, never
/// copied through user space. NBDClient reads a READ's data into one and sends a WRITE's payload from one,
/// so `swiftxen nbd copy` relays NBD → NBD without touching the bytes.
///
/// Ownership: the pipe belongs to whoever made it, and lends itself to one request at a time — the request
/// holds a reference until it completes, and the descriptors close when the last reference goes, so a
/// request still in flight never sees them reused. Between requests it is empty: a READ fills exactly its
/// length, a WRITE of that length drains it, ``discard(_:)`` drops what is not sent.
///
/// OCaml: none (ocaml-nbd and libnbd copy through buffers)
public final class SplicePipe: Sendable {
    /// Bytes it holds at most: a READ into it or a WRITE from it is at most this long.
    public let capacity: Int
    /// The read end (non-blocking).
    package let readEnd: Int32
    /// The write end (non-blocking).
    package let writeEnd: Int32

    /// A pipe able to hold `capacity` bytes (the kernel rounds up to pages; unprivileged processes are
    /// limited by `/proc/sys/fs/pipe-max-size`, 1 MiB by default). Throws the errno of `pipe2` or
    /// `F_SETPIPE_SZ`.
    ///
    /// OCaml: none (see the type)
    public init(capacity: Int = 1 << 20) throws(SplicePipeError) {
        var ends: [Int32] = [-1, -1]
        guard Posix.pipe2(&ends, O_CLOEXEC | O_NONBLOCK) == 0 else { throw SplicePipeError(errno: errno) }
        readEnd = ends[0]
        writeEnd = ends[1]
        let size = fcntl(writeEnd, Posix.setPipeSize, Int32(clamping: max(capacity, 4096)))
        guard size >= 0 else {
            let error = errno
            close(readEnd)
            close(writeEnd)
            throw SplicePipeError(errno: error)
        }
        self.capacity = Int(size)
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }

    /// Bytes it holds now (`FIONREAD`).
    ///
    /// OCaml: none (see the type)
    public var count: Int {
        var bytes: Int32 = 0
        return ioctl(readEnd, UInt(FIONREAD), &bytes) == 0 ? Int(bytes) : 0
    }

    /// Moves up to `count` bytes from `descriptor` (a socket) into the pipe without blocking. Returns what
    /// moved, 0 at the end of the stream, or -1 with `errno` (`EAGAIN`: nothing to read, or the pipe is full).
    package func fill(from descriptor: Int32, count: Int) -> Int {
        Posix.splice(descriptor, nil, writeEnd, nil, count, Posix.spliceMove | Posix.spliceNonBlock)
    }

    /// Moves up to `count` bytes from the pipe to `descriptor` (a socket) without blocking. Returns what
    /// moved, or -1 with `errno` (`EAGAIN`: the socket is full, or the pipe is empty).
    package func drain(to descriptor: Int32, count: Int) -> Int {
        Posix.splice(readEnd, nil, descriptor, nil, count, Posix.spliceMove | Posix.spliceNonBlock)
    }

    /// Appends bytes (a short data chunk read through a buffer). False if the pipe could not take them all.
    ///
    /// OCaml: none (see the type)
    public func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let wrote = write(writeEnd, bytes.baseAddress! + done, bytes.count - done)
            if wrote < 0 && errno == EINTR { continue }
            guard wrote > 0 else { return false }
            done += wrote
        }
        return true
    }

    /// Appends `count` zero bytes (a hole). False if the pipe could not take them all.
    package func appendZeroes(_ count: Int) -> Bool {
        var left = count
        while left > 0 {
            let take = min(left, Self.zeroes.count)
            guard append(UnsafeRawBufferPointer(rebasing: Self.zeroes[0..<take])) else { return false }
            left -= take
        }
        return true
    }

    /// Moves `count` bytes from the pipe into `buffer` (a reader that needs the bytes themselves, such as a
    /// TLS connection). False if the pipe held fewer.
    ///
    /// OCaml: none (see the type)
    public func take(into buffer: PageBuffer) -> Bool {
        var done = 0
        while done < buffer.count {
            let got = read(readEnd, buffer.pointer + done, buffer.count - done)
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { return false }
            done += got
        }
        return true
    }

    /// Drops up to `count` bytes (everything with `nil`) without reading them: spliced to `/dev/null`.
    /// Returns how many were dropped.
    ///
    /// OCaml: none (see the type)
    @discardableResult
    public func discard(_ count: Int? = nil) -> Int {
        var left = count ?? Int.max
        var dropped = 0
        while left > 0 {
            let moved = drain(to: Self.null, count: min(left, 1 << 30))
            if moved < 0 && errno == EINTR { continue }
            guard moved > 0 else { break }
            left -= moved
            dropped += moved
        }
        return dropped
    }

    /// Zero bytes for holes, shared (read only).
    nonisolated(unsafe) private static let zeroes = UnsafeMutableRawBufferPointer.allocate(
        byteCount: 1 << 16, alignment: 4096
    )
    .initialized(repeating: 0)
    /// `/dev/null`, open for the life of the process.
    private static let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
}

extension UnsafeMutableRawBufferPointer {
    fileprivate func initialized(repeating byte: UInt8) -> UnsafeRawBufferPointer {
        initializeMemory(as: UInt8.self, repeating: byte)
        return UnsafeRawBufferPointer(self)
    }
}

/// `pipe2(2)` or `F_SETPIPE_SZ` failed while making a ``SplicePipe``.
///
/// OCaml: none (see ``SplicePipe``)
public struct SplicePipeError: Error, Equatable, CustomStringConvertible {
    /// The errno.
    public let errno: Int32

    public var description: String { "pipe: \(String(cString: strerror(errno)))" }
}
