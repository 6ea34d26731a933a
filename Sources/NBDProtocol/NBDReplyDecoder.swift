// Streaming decoder for transmission replies: simple, structured and extended, fed straight from socket
// buffers. Read data is handed out as slices of the input so the caller copies it once, into its pages.

/// What the decoder needs to know about a request in flight to check a reply against it.
///
/// OCaml: none (ocaml-nbd's `Mux` keeps only the handle)
public struct NBDRequestInfo: Sendable, Equatable {
    /// The `command` field.
    public var command: NBDCommand
    /// The `offset` field.
    public var offset: UInt64
    /// The `length` field.
    public var length: UInt64

    /// Memberwise initializer.
    public init(command: NBDCommand, offset: UInt64, length: UInt64) {
        self.command = command
        self.offset = offset
        self.length = length
    }
}

/// A step of a reply.
///
/// OCaml: `Nbd.Protocol.Reply` (simple replies only)
public enum NBDReplyEvent: Equatable {
    /// Read data for `cookie` at absolute byte `offset`; valid only until the next call.
    case data(cookie: UInt64, offset: UInt64, bytes: UnsafeRawBufferPointer)
    /// A hole (reads as zeroes) for `cookie`.
    case hole(cookie: UInt64, offset: UInt64, length: UInt64)
    /// Block status extents for `cookie` in context `contextID`.
    case blockStatus(cookie: UInt64, contextID: UInt32, extents: [NBDExtent])
    /// The server reports an error for `cookie` (the request fails, the connection lives on).
    case error(cookie: UInt64, errno: NBDErrno, message: String, offset: UInt64?)
    /// The last reply for `cookie`.
    case done(cookie: UInt64)

    /// Equality by content.
    public static func == (lhs: NBDReplyEvent, rhs: NBDReplyEvent) -> Bool {
        switch (lhs, rhs) {
        case (.data(let c1, let o1, let b1), .data(let c2, let o2, let b2)):
            c1 == c2 && o1 == o2 && Array(b1) == Array(b2)
        case (.hole(let c1, let o1, let l1), .hole(let c2, let o2, let l2)): c1 == c2 && o1 == o2 && l1 == l2
        case (.blockStatus(let c1, let i1, let e1), .blockStatus(let c2, let i2, let e2)):
            c1 == c2 && i1 == i2 && e1 == e2
        case (.error(let c1, let e1, let m1, let o1), .error(let c2, let e2, let m2, let o2)):
            c1 == c2 && e1 == e2 && m1 == m2 && o1 == o2
        case (.done(let c1), .done(let c2)): c1 == c2
        default: false
        }
    }
}

/// Incremental reply decoder. Feed it whatever the socket delivered; it never buffers read data, only
/// headers and small chunk payloads (bounded by `maxBufferedChunk`).
///
/// OCaml: `Nbd.Protocol.Reply.unmarshal` (+ the structured/extended replies ocaml-nbd lacks)
public struct NBDReplyDecoder: Sendable {
    private enum State: Sendable {
        case header
        /// Collecting a chunk's payload (or, for OFFSET_DATA, its 8-byte offset prefix).
        case chunkPayload(Chunk, need: Int)
        case data(cookie: UInt64, offset: UInt64, remaining: UInt64, done: Bool)
        case pendingDone(UInt64)
    }

    private struct Chunk: Sendable {
        var cookie: UInt64
        var type: UInt16
        var done: Bool
        var length: UInt64
        var request: NBDRequestInfo
    }

    /// True once `OPT_STRUCTURED_REPLY` was negotiated.
    public var structuredReplies: Bool
    /// True once `OPT_EXTENDED_HEADERS` was negotiated (only extended replies are then valid).
    public var extendedHeaders: Bool
    /// Largest non-data chunk payload buffered (block status, errors).
    public var maxBufferedChunk: Int

    private var state: State = .header
    private var buffer: [UInt8] = []

    /// Memberwise initializer.
    public init(structuredReplies: Bool = false, extendedHeaders: Bool = false, maxBufferedChunk: Int = 1 << 24) {
        self.structuredReplies = structuredReplies
        self.extendedHeaders = extendedHeaders
        self.maxBufferedChunk = maxBufferedChunk
        buffer.reserveCapacity(64)
    }

    /// True when the decoder sits between replies (nothing partial buffered).
    public var isIdle: Bool {
        if case .header = state { return buffer.isEmpty }
        return false
    }

    /// The read data the decoder expects next, when it sits inside a data run: the request's cookie, the
    /// absolute offset of the next byte and how many bytes remain. A caller that owns the destination may
    /// read those bytes straight into it and report them with ``skipData(_:)`` instead of feeding them.
    ///
    /// OCaml: none (ocaml-nbd always reads into a staging buffer)
    public var pendingData: (cookie: UInt64, offset: UInt64, remaining: UInt64)? {
        if case .data(let cookie, let offset, let remaining, _) = state, remaining > 0 {
            return (cookie, offset, remaining)
        }
        return nil
    }

    /// Accounts for `count` bytes of the pending data run that the caller read itself (at most
    /// ``pendingData``'s `remaining`; more is clamped). The next ``next(_:lookup:)`` carries on after them.
    ///
    /// OCaml: none
    public mutating func skipData(_ count: UInt64) {
        guard case .data(let cookie, let offset, let remaining, let done) = state else { return }
        let take = min(count, remaining)
        state = .data(cookie: cookie, offset: offset + take, remaining: remaining - take, done: done)
    }

    /// Consumes bytes from the front of `input` and returns the next event, or nil when `input` ran out.
    /// `lookup` maps a cookie to its request (nil: unknown cookie, a protocol error). After a throw the
    /// connection must be dropped.
    ///
    /// OCaml: `Nbd.Protocol.Reply.unmarshal`
    public mutating func next(
        _ input: inout UnsafeRawBufferPointer, lookup: (UInt64) -> NBDRequestInfo?
    ) throws(NBDProtocolError) -> NBDReplyEvent? {
        while true {
            switch state {
            case .pendingDone(let cookie):
                state = .header
                return .done(cookie: cookie)
            case .data(let cookie, let offset, let remaining, let done):
                if remaining == 0 {
                    state = done ? .pendingDone(cookie) : .header
                    continue
                }
                guard !input.isEmpty else { return nil }
                let take = Int(min(remaining, UInt64(input.count)))
                let slice = UnsafeRawBufferPointer(rebasing: input[0..<take])
                input = UnsafeRawBufferPointer(rebasing: input[take...])
                state = .data(
                    cookie: cookie, offset: offset + UInt64(take), remaining: remaining - UInt64(take), done: done)
                return .data(cookie: cookie, offset: offset, bytes: slice)
            case .header:
                guard fill(&input, to: 4) else { return nil }
                let magic =
                    UInt32(buffer[0]) << 24 | UInt32(buffer[1]) << 16 | UInt32(buffer[2]) << 8 | UInt32(buffer[3])
                let allowed: Bool
                switch magic {
                case NBDMagic.simpleReply: allowed = !extendedHeaders
                case NBDMagic.structuredReply: allowed = structuredReplies && !extendedHeaders
                case NBDMagic.extendedReply: allowed = extendedHeaders
                default: allowed = false
                }
                guard allowed, let size = NBDReplyHeader.size(magic: magic) else {
                    throw .badMagic(what: "reply", got: UInt64(magic))
                }
                guard fill(&input, to: size) else { return nil }
                let header = try NBDReplyHeader.decode(buffer)
                buffer.removeAll(keepingCapacity: true)
                if let event = try startReply(header, lookup: lookup) { return event }
            case .chunkPayload(let chunk, let need):
                guard fill(&input, to: need) else { return nil }
                let payload = buffer
                buffer.removeAll(keepingCapacity: true)
                if let event = try finishChunk(chunk, payload) { return event }
            }
        }
    }

    /// Appends bytes from `input` until `buffer` holds `count`; true when it does.
    private mutating func fill(_ input: inout UnsafeRawBufferPointer, to count: Int) -> Bool {
        let want = count - buffer.count
        if want <= 0 { return true }
        let take = min(want, input.count)
        buffer.append(contentsOf: input[0..<take])
        input = UnsafeRawBufferPointer(rebasing: input[take...])
        return buffer.count == count
    }

    // MARK: - Headers

    private mutating func startReply(
        _ header: NBDReplyHeader, lookup: (UInt64) -> NBDRequestInfo?
    ) throws(NBDProtocolError) -> NBDReplyEvent? {
        let flags: UInt16
        let type: UInt16
        let cookie: UInt64
        let length: UInt64
        switch header {
        case .simple(let error, let simpleCookie):
            guard let request = lookup(simpleCookie) else { throw .unknownCookie(simpleCookie) }
            if error != 0 {
                state = .pendingDone(simpleCookie)
                return .error(cookie: simpleCookie, errno: NBDErrno(rawValue: error), message: "", offset: nil)
            }
            if request.command == .read {
                state = .data(cookie: simpleCookie, offset: request.offset, remaining: request.length, done: true)
            } else {
                state = .pendingDone(simpleCookie)
            }
            return nil
        case .structured(let chunkFlags, let chunkType, let chunkCookie, let chunkLength):
            (flags, type, cookie, length) = (chunkFlags, chunkType, chunkCookie, UInt64(chunkLength))
        case .extended(let chunkFlags, let chunkType, let chunkCookie, _, let chunkLength):
            // The offset field repeats the request's; payloads carry their own offsets.
            (flags, type, cookie, length) = (chunkFlags, chunkType, chunkCookie, chunkLength)
        }
        guard let request = lookup(cookie) else { throw .unknownCookie(cookie) }
        let chunk = Chunk(
            cookie: cookie, type: type, done: flags & NBDChunkType.flagDone != 0, length: length, request: request)
        switch type {
        case NBDChunkType.none:
            guard length == 0, chunk.done else { throw .unexpected("NBD_REPLY_TYPE_NONE without DONE or with data") }
            state = .pendingDone(cookie)
            return nil
        case NBDChunkType.offsetData:
            guard request.command == .read else { throw .unexpected("data chunk for \(request.command)") }
            guard length > 8 else { throw .truncated(what: "OFFSET_DATA chunk") }
            guard length - 8 <= request.length else {
                throw .oversize(what: "OFFSET_DATA chunk", length: length - 8, limit: request.length)
            }
            state = .chunkPayload(chunk, need: 8)
        default:
            guard length <= UInt64(maxBufferedChunk) else {
                throw .oversize(what: "reply chunk \(type)", length: length, limit: UInt64(maxBufferedChunk))
            }
            state = .chunkPayload(chunk, need: Int(length))
        }
        return nil
    }

    // MARK: - Chunk payloads

    private mutating func finishChunk(_ chunk: Chunk, _ payload: [UInt8]) throws(NBDProtocolError) -> NBDReplyEvent? {
        var reader = NBDReader(payload, what: "reply chunk \(chunk.type)")
        let request = chunk.request
        let end = request.offset + request.length
        state = chunk.done ? .pendingDone(chunk.cookie) : .header
        switch chunk.type {
        case NBDChunkType.offsetData:
            let offset = try reader.uint64()
            let count = chunk.length - 8
            guard offset >= request.offset, offset <= end, count <= end - offset else {
                throw .outsideRequest(cookie: chunk.cookie, offset: offset, length: count)
            }
            state = .data(cookie: chunk.cookie, offset: offset, remaining: count, done: chunk.done)
            return nil
        case NBDChunkType.offsetHole:
            guard request.command == .read else { throw .unexpected("hole chunk for \(request.command)") }
            let offset = try reader.uint64()
            let count: UInt64
            switch (payload.count, extendedHeaders) {
            case (12, _): count = UInt64(try reader.uint32())
            case (16, true): count = try reader.uint64()
            default: throw .truncated(what: "OFFSET_HOLE chunk")
            }
            guard count > 0, offset >= request.offset, offset <= end, count <= end - offset else {
                throw .outsideRequest(cookie: chunk.cookie, offset: offset, length: count)
            }
            return .hole(cookie: chunk.cookie, offset: offset, length: count)
        case NBDChunkType.blockStatus, NBDChunkType.blockStatusExtended:
            guard request.command == .blockStatus else { throw .unexpected("block status for \(request.command)") }
            let wide = chunk.type == NBDChunkType.blockStatusExtended
            guard wide == extendedHeaders else { throw .unexpected("block status chunk type \(chunk.type)") }
            let id = try reader.uint32()
            var extents: [NBDExtent] = []
            if wide {
                let count = try reader.uint32()
                guard UInt64(count) * 16 == UInt64(reader.remaining), count > 0 else {
                    throw .truncated(what: "BLOCK_STATUS_EXT chunk")
                }
                for _ in 0..<count {
                    extents.append(NBDExtent(length: try reader.uint64(), flags: try reader.uint64()))
                }
            } else {
                guard reader.remaining % 8 == 0, reader.remaining > 0 else {
                    throw .truncated(what: "BLOCK_STATUS chunk")
                }
                while reader.remaining > 0 {
                    extents.append(NBDExtent(length: UInt64(try reader.uint32()), flags: UInt64(try reader.uint32())))
                }
            }
            return .blockStatus(cookie: chunk.cookie, contextID: id, extents: extents)
        default:
            // Error chunks (bit 15): known and unknown ones fail only the request, as the spec says.
            guard chunk.type & 0x8000 != 0 else { throw .unexpected("reply chunk type \(chunk.type)") }
            let errno = try reader.uint32()
            let messageLength = try reader.uint16()
            guard Int(messageLength) <= reader.remaining else { throw .truncated(what: "error chunk message") }
            let message = try reader.string(Int(messageLength))
            var offset: UInt64?
            if chunk.type == NBDChunkType.errorOffset {
                let at = try reader.uint64()
                guard at >= request.offset, at < end else {
                    throw .outsideRequest(cookie: chunk.cookie, offset: at, length: 0)
                }
                offset = at
            }
            return .error(cookie: chunk.cookie, errno: NBDErrno(rawValue: errno), message: message, offset: offset)
        }
    }
}
