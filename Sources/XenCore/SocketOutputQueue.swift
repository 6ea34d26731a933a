#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Messages waiting to be written to a socket, oldest first: each a header (in memory of its own, so
/// `sendmsg` can point at it) and a payload — pages sent straight from where they are, with one gathering
/// `sendmsg` for as many messages as are queued, or a leased file range sent with `sendfile(2)` (no copy
/// through user space), or the contents of a ``SplicePipe`` moved with `splice(2)` (page references, no
/// copy either). NBDClient queues requests (WRITE payloads) with it, NBDServer replies (READ data).
/// The socket must be non-blocking: `sendfile` has no `MSG_DONTWAIT` of its own.
package struct SocketOutputQueue: ~Copyable {
    private struct Item {
        var header: UnsafeMutableRawBufferPointer
        var payload: [PageBuffer]
        /// Sent after the header, instead of pages.
        var file: FileRangeLease?
        /// Spliced after the header, instead of pages: it must already hold the payload.
        var pipe: SplicePipe?
        /// Header + payload bytes.
        var total: Int
        /// Bytes of it already sent.
        var sent: Int
    }

    private var items: [Item] = []
    /// Set by the I/O thread's own submissions: it flushes once after running its jobs (one `sendmsg` for
    /// the whole batch) instead of once per message.
    package var flushPending = false
    /// The first failed `sendmsg`/`sendfile` errno; writing stops, the I/O thread ends the connection.
    package private(set) var failed: Int32 = 0
    /// Bytes queued and not yet sent (headers and payloads).
    package private(set) var queuedBytes = 0

    package init() {}

    deinit {
        for item in items { item.header.deallocate() }
    }

    /// True when nothing is waiting.
    package var isEmpty: Bool { items.isEmpty }

    /// Queues a header and its payload pages.
    package mutating func append(header: [UInt8], payload: [PageBuffer]) {
        append(header, payload, nil, payload.reduce(0) { $0 + $1.count })
    }

    /// Queues a header and a file range sent after it with `sendfile`; the lease is dropped once it is sent
    /// (or with the queue).
    package mutating func append(header: [UInt8], file: FileRangeLease) {
        append(header, [], file, file.count)
    }

    /// Queues a header and `count` bytes spliced after it from `pipe`, which must hold them already; the
    /// pipe is held until they are sent (or with the queue).
    package mutating func append(header: [UInt8], pipe: SplicePipe, count: Int) {
        append(header, [], nil, count, pipe: pipe)
    }

    private mutating func append(
        _ header: [UInt8], _ payload: [PageBuffer], _ file: FileRangeLease?, _ bytes: Int, pipe: SplicePipe? = nil
    ) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: header.count, alignment: 8)
        memory.copyBytes(from: header)
        items.append(
            Item(header: memory, payload: payload, file: file, pipe: pipe, total: header.count + bytes, sent: 0))
        queuedBytes += header.count + bytes
    }

    /// Sends as much as the socket takes without blocking. Returns 0 when everything was sent or the socket
    /// is full (the rest waits for POLLOUT), else the errno (recorded in `failed`).
    package mutating func flush(to descriptor: Int32) -> Int32 {
        if failed != 0 { return failed }
        var vectors = [iovec](repeating: iovec(), count: 64)
        while let head = items.first {
            let sent: Int
            if let file = head.file, head.sent >= head.header.count {
                // The head's header is out: its file range goes next, page-cache pages handed to the socket.
                var offset = off_t(file.offset) + off_t(head.sent - head.header.count)
                sent = sendfile(descriptor, file.descriptor, &offset, head.total - head.sent)
                // End of file before the range's end: the file shrank under us; the stream cannot be completed.
                if sent == 0 { return fail(EIO) }
            } else if let pipe = head.pipe, head.sent >= head.header.count {
                sent = pipe.drain(to: descriptor, count: head.total - head.sent)
                // An empty pipe also says EAGAIN: that would wait for POLLOUT for ever. It cannot happen unless
                // its owner queued bytes it did not have.
                if sent < 0, errno == EAGAIN, pipe.count == 0 { return fail(EIO) }
            } else {
                let count = gather(into: &vectors)
                sent = vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                    var message = msghdr()
                    message.msg_iov = buffer.baseAddress
                    message.msg_iovlen = count
                    return sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                }
            }
            if sent < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
                return fail(errno)
            }
            advance(by: sent)
        }
        return 0
    }

    private mutating func fail(_ error: Int32) -> Int32 {
        failed = error
        return error
    }

    /// The unsent headers and pages from the front, up to and including the header of the first item with a
    /// file range or a pipe (which goes with `sendfile` or `splice` afterwards); returns the vector count.
    private func gather(into vectors: inout [iovec]) -> Int {
        var count = 0
        for item in items {
            var skip = item.sent
            if skip < item.header.count {
                vectors[count] = iovec(
                    iov_base: item.header.baseAddress.map { $0 + skip }, iov_len: item.header.count - skip)
                count += 1
                skip = 0
            } else {
                skip -= item.header.count
            }
            if item.file != nil || item.pipe != nil { break }
            for page in item.payload where count < vectors.count {
                if skip >= page.count {
                    skip -= page.count
                    continue
                }
                vectors[count] = iovec(iov_base: page.pointer + skip, iov_len: page.count - skip)
                count += 1
                skip = 0
            }
            if count >= vectors.count - 1 { break }
        }
        return count
    }

    /// Drops `count` sent bytes from the front.
    private mutating func advance(by count: Int) {
        queuedBytes -= count
        var left = count
        var done = 0
        for index in items.indices {
            let take = min(left, items[index].total - items[index].sent)
            items[index].sent += take
            left -= take
            guard items[index].sent == items[index].total else { break }
            done += 1
            if left == 0 { break }
        }
        for item in items[0..<done] { item.header.deallocate() }
        items.removeFirst(done)
    }
}
