import XenStoreProtocol

/// Lets one request at a time into the Linux xenbus device: the next packet is written only once the reply
/// to the previous one has been read back (or its `write(2)` failed, which the device answers with nothing).
///
/// Why: the kernel's device (`drivers/xen/xenbus/xenbus_dev_frontend.c`) assembles each `write(2)` in one
/// per-file buffer (`u->u.buffer`) and hands the request on with `xenbus_dev_request_and_reply`, which copies
/// the 16-byte header (`xs_send`: `req->msg = *msg`, then swaps in its own req_id from `xs_request_enter`,
/// keeping ours in `caller_req_id` for the reply) but only *points* at the body (`vec->iov_base = msg + 1`).
/// The body is copied to the xenstore ring later, by `xenbus_thread`. A second `write(2)` before that
/// overwrites the buffer, so the first request leaves with the second one's body under its own header:
/// xenstored answers the wrong path and the reply comes back, with our req_id correctly restored, to the wrong
/// requester. The kernel cannot tell us when the body has been copied; a reply proves it has. libxenstore
/// never pipelines on the device (`xs_talkv` holds its request mutex across write and read), so it never
/// meets this. The price is one round trip per request over the device; sockets keep full multiplexing.
///
/// Pure state machine (no IO, no lock); `DescriptorStream` keeps it in a `Mutex` and writes what it returns.
///
/// OCaml: none (mirage talks to the ring directly; this mirrors libxenstore's one-request-at-a-time
/// use of the device)
struct XenbusDeviceGate {
    /// Packets waiting for the device, oldest first from `head`.
    private var queue: [[UInt8]] = []
    private var head = 0
    /// A packet was written and its reply has not been read back yet.
    private(set) var inFlight = false
    /// Header bytes of the packet being received, while fewer than 16 have arrived.
    private var header: [UInt8] = []
    /// Body bytes of the packet being received still to skip.
    private var bodyRemaining = 0

    /// Packets waiting behind the one in flight.
    var waiting: Int { queue.count - head }

    /// Queues the packets of `bytes` (whole xenstore packets, as the multiplexer writes them; a packet whose
    /// header announces more than follows is cut at the end of `bytes`). Returns the packet to write now, if
    /// none is in flight.
    mutating func submit(_ bytes: [UInt8]) -> [UInt8]? {
        var start = 0
        while start + 16 <= bytes.count {
            let length = Int(XenbusDeviceFraming.word(bytes, start + 12))
            let end = start + 16 + min(length, bytes.count - start - 16)
            queue.append(Array(bytes[start..<end]))
            start = end
        }
        return takeNextIfIdle()
    }

    /// Bytes read from the device: a complete reply (any packet but `XS_WATCH_EVENT`) frees the slot. Returns
    /// the packet to write next, if one waits.
    mutating func received(_ bytes: [UInt8]) -> [UInt8]? {
        var index = 0
        while index < bytes.count {
            if bodyRemaining > 0 {
                let skip = min(bodyRemaining, bytes.count - index)
                bodyRemaining -= skip
                index += skip
                if bodyRemaining == 0 { packetEnded() }
                continue
            }
            let take = min(16 - header.count, bytes.count - index)
            header += bytes[index..<(index + take)]
            index += take
            guard header.count == 16 else { break }
            // Read once into locals. An absurd length only delays the next write: the client's parser rejects
            // the stream and closes the connection.
            receivingEvent = XenbusDeviceFraming.word(header, 0) == XenStoreMessageType.watchEvent.rawValue
            bodyRemaining = Int(XenbusDeviceFraming.word(header, 12))
            header.removeAll(keepingCapacity: true)
            if bodyRemaining == 0 { packetEnded() }
        }
        return takeNextIfIdle()
    }

    /// The packet being received is an `XS_WATCH_EVENT` (no reply: it keeps the slot).
    private var receivingEvent = false

    private mutating func packetEnded() {
        if !receivingEvent { inFlight = false }
    }

    /// The `write(2)` of the packet in flight failed: the device queued nothing, so the slot is free again.
    /// Returns the packet to write next, if one waits.
    mutating func writeFailed() -> [UInt8]? {
        inFlight = false
        return takeNextIfIdle()
    }

    /// The connection ended: nothing more is written.
    mutating func close() {
        queue = []
        head = 0
    }

    private mutating func takeNextIfIdle() -> [UInt8]? {
        guard !inFlight, head < queue.count else { return nil }
        let packet = queue[head]
        head += 1
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= queue.count {
            queue.removeFirst(head)
            head = 0
        }
        inFlight = true
        return packet
    }
}
