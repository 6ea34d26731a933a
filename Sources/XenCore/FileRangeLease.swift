#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A byte range of an open file, lent out so that a socket writer can send it with `sendfile(2)`: the
/// kernel hands the file's page-cache pages to the socket without copying them through user space.
///
/// The lease is the descriptor's visible lifetime: its owner (a `FileBlockDevice`) does not close the
/// descriptor while a lease is alive, and the lease gives it back exactly once, when the last reference
/// goes (sent, or dropped with a connection). Keep it only as long as the bytes are queued.
///
/// OCaml: none (mirage-block-unix and ocaml-nbd always copy through a buffer)
public final class FileRangeLease: Sendable {
    /// The open file.
    public let descriptor: Int32
    /// Where the range starts in the file.
    public let offset: Int64
    /// Its length in bytes.
    public let count: Int
    private let giveBack: @Sendable () -> Void

    /// A lease on `count` bytes of `descriptor` from `offset`; `giveBack` runs once, when the lease goes.
    ///
    /// OCaml: none (see the type)
    public init(descriptor: Int32, offset: Int64, count: Int, giveBack: @escaping @Sendable () -> Void) {
        self.descriptor = descriptor
        self.offset = offset
        self.count = count
        self.giveBack = giveBack
    }

    deinit { giveBack() }

    /// `count` bytes of the range from `start`, as a lease of its own that keeps this one alive.
    ///
    /// OCaml: none (see the type)
    public func subrange(from start: Int, count: Int) -> FileRangeLease {
        precondition(start >= 0 && count >= 0 && start + count <= self.count, "subrange outside the lease")
        if start == 0 && count == self.count { return self }
        return FileRangeLease(descriptor: descriptor, offset: offset + Int64(start), count: count) { _ = self }
    }

    /// The range's bytes read into fresh pages (`pread` on the calling thread): for a writer that cannot
    /// `sendfile`, such as a TLS connection. Nil if the file ends early or cannot be read.
    ///
    /// OCaml: none (see the type)
    public func readIntoPages() -> PageBuffer? {
        let pages = PageBuffer(byteCount: count)
        var done = 0
        while done < count {
            let got = pread(descriptor, pages.pointer + done, count - done, off_t(offset) + off_t(done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { return nil }
            done += got
        }
        return pages
    }
}
