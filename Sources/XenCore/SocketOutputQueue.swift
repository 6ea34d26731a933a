#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Messages waiting to be written to a socket, oldest first: each a header (in memory of its own, so
/// `sendmsg` can point at it) and payload pages sent straight from where they are, with one gathering
/// `sendmsg` for as many messages as are queued. NBDClient queues requests (WRITE payloads) with it,
/// NBDServer replies (READ data).
package struct SocketOutputQueue: ~Copyable {
    private struct Item {
        var header: UnsafeMutableRawBufferPointer
        var payload: [PageBuffer]
        /// Bytes of header + payload already sent.
        var sent: Int
    }

    private var items: [Item] = []
    /// Set by the I/O thread's own submissions: it flushes once after running its jobs (one `sendmsg` for
    /// the whole batch) instead of once per message.
    package var flushPending = false
    /// The first failed `sendmsg` errno; writing stops, the I/O thread ends the connection.
    package private(set) var failed: Int32 = 0
    /// Bytes queued and not yet sent (headers and payloads).
    package private(set) var queuedBytes = 0

    package init() {}

    deinit {
        for item in items { item.header.deallocate() }
    }

    /// True when nothing is waiting.
    package var isEmpty: Bool { items.isEmpty }

    /// Queues a header and its payload.
    package mutating func append(header: [UInt8], payload: [PageBuffer]) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: header.count, alignment: 8)
        memory.copyBytes(from: header)
        items.append(Item(header: memory, payload: payload, sent: 0))
        queuedBytes += header.count + payload.reduce(0) { $0 + $1.count }
    }

    /// Sends as much as the socket takes without blocking. Returns 0 when everything was sent or the socket
    /// is full (the rest waits for POLLOUT), else the errno (recorded in `failed`).
    package mutating func flush(to descriptor: Int32) -> Int32 {
        if failed != 0 { return failed }
        var vectors = [iovec](repeating: iovec(), count: 64)
        while !items.isEmpty {
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
            let sent = vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                var message = msghdr()
                message.msg_iov = buffer.baseAddress
                message.msg_iovlen = count
                return sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
                failed = errno
                return failed
            }
            advance(by: sent)
        }
        return 0
    }

    /// Drops `count` sent bytes from the front.
    private mutating func advance(by count: Int) {
        queuedBytes -= count
        var left = count
        var done = 0
        for index in items.indices {
            let total = items[index].header.count + items[index].payload.reduce(0) { $0 + $1.count }
            let take = min(left, total - items[index].sent)
            items[index].sent += take
            left -= take
            guard items[index].sent == total else { break }
            done += 1
            if left == 0 { break }
        }
        for item in items[0..<done] { item.header.deallocate() }
        items.removeFirst(done)
    }
}
