// The server's checks of transmission requests against the negotiated session, and the replies it sends:
// pure functions, so a hostile client's requests are checked (and fuzzed) without a socket or a device.

/// What a checked request asks the server to do (byte offsets and lengths, inside the export and aligned
/// to its minimum block size).
///
/// OCaml: `Nbd.Protocol.Command.t` (as `Nbd.Server.serve` matches on it)
public enum NBDServerOperation: Sendable, Equatable {
    /// `NBD_CMD_READ`; `dontFragment`: one content chunk.
    case read(offset: UInt64, length: UInt64, dontFragment: Bool)
    /// `NBD_CMD_WRITE`; its payload follows the header.
    case write(offset: UInt64, length: UInt64, fua: Bool)
    /// `NBD_CMD_FLUSH`.
    case flush
    /// `NBD_CMD_TRIM`.
    case trim(offset: UInt64, length: UInt64, fua: Bool)
    /// `NBD_CMD_CACHE`.
    case cache(offset: UInt64, length: UInt64)
    /// `NBD_CMD_WRITE_ZEROES`.
    case writeZeroes(offset: UInt64, length: UInt64, fua: Bool, noHole: Bool, fast: Bool)
    /// `NBD_CMD_BLOCK_STATUS` for `base:allocation`; `one`: `REQ_ONE`.
    case blockStatus(offset: UInt64, length: UInt64, one: Bool)
    /// `NBD_CMD_DISC`: finish what is in flight, then close.
    case disconnect
}

/// Why a request is refused: the errno to answer and a message for structured replies.
///
/// OCaml: `Nbd.Protocol.Error.t` (the errors `Nbd.Server.error` sends)
public struct NBDServerRefusal: Error, Sendable, Equatable {
    /// The error to reply with.
    public var errno: NBDErrno
    /// A message for a human, sent in structured error chunks.
    public var message: String

    /// Memberwise initializer.
    public init(_ errno: NBDErrno, _ message: String) {
        self.errno = errno
        self.message = message
    }
}

extension NBDServerSession {
    /// Largest READ or WRITE payload accepted (the advertised maximum).
    public var maxPayload: UInt64 { UInt64(export.blockSize.maximum) }

    /// Checks a request against the export and the negotiated session: the command and every flag
    /// known and allowed, the range inside the export and aligned, writes on a writable export, and only
    /// commands the export advertises. The errno is the one the spec names for each case.
    ///
    /// OCaml: `Nbd.Server.serve` (its checks; ocaml-nbd checks only sector alignment)
    public func check(_ header: NBDRequestHeader) -> Result<NBDServerOperation, NBDServerRefusal> {
        guard let command = header.command else {
            return .failure(NBDServerRefusal(.einval, "unknown command \(header.type)"))
        }
        let flags = export.info.flags
        var allowed: NBDCommandFlags = flags.contains(.sendFUA) ? [.fua] : []
        switch command {
        case .read where flags.contains(.sendDF) && structuredReplies: allowed.insert(.dontFragment)
        case .writeZeroes:
            allowed.insert(.noHole)
            if flags.contains(.sendFastZero) { allowed.insert(.fastZero) }
        case .blockStatus: allowed.insert(.reqOne)
        default: break
        }
        let payload = extendedHeaders && command == .write
        if payload { allowed.insert(.payloadLength) }
        guard header.flags.isSubset(of: allowed), !payload || header.flags.contains(.payloadLength) else {
            return .failure(
                NBDServerRefusal(.einval, "flags 0x\(String(header.flags.rawValue, radix: 16)) for \(command)"))
        }
        let offset = header.offset
        let length = header.length
        let fua = header.flags.contains(.fua)
        switch command {
        case .disconnect: return .success(.disconnect)
        case .flush:
            guard flags.contains(.sendFlush) else { return .failure(NBDServerRefusal(.einval, "flush not offered")) }
            return .success(.flush)
        case .read:
            if let refusal = checkRange(offset, length, aligned: true, beyond: .einval) { return .failure(refusal) }
            guard length <= maxPayload else {
                return .failure(NBDServerRefusal(.eoverflow, "read of \(length) bytes exceeds \(maxPayload)"))
            }
            return .success(.read(offset: offset, length: length, dontFragment: header.flags.contains(.dontFragment)))
        case .write, .trim, .writeZeroes:
            guard !flags.contains(.readOnly) else {
                return .failure(NBDServerRefusal(.eperm, "the export is read-only"))
            }
            let offered: Bool =
                switch command {
                case .trim: flags.contains(.sendTrim)
                case .writeZeroes: flags.contains(.sendWriteZeroes)
                default: true
                }
            guard offered else { return .failure(NBDServerRefusal(.einval, "\(command) not offered")) }
            let beyond: NBDErrno = command == .trim ? .einval : .enospc
            if let refusal = checkRange(offset, length, aligned: true, beyond: beyond) { return .failure(refusal) }
            switch command {
            case .write: return .success(.write(offset: offset, length: length, fua: fua))
            case .trim: return .success(.trim(offset: offset, length: length, fua: fua))
            default:
                return .success(
                    .writeZeroes(
                        offset: offset, length: length, fua: fua, noHole: header.flags.contains(.noHole),
                        fast: header.flags.contains(.fastZero)))
            }
        case .cache:
            guard flags.contains(.sendCache) else { return .failure(NBDServerRefusal(.einval, "cache not offered")) }
            if let refusal = checkRange(offset, length, aligned: false, beyond: .einval) { return .failure(refusal) }
            return .success(.cache(offset: offset, length: length))
        case .blockStatus:
            guard allocationContext != nil else {
                return .failure(NBDServerRefusal(.einval, "no metadata context was negotiated"))
            }
            if let refusal = checkRange(offset, length, aligned: false, beyond: .einval) { return .failure(refusal) }
            return .success(.blockStatus(offset: offset, length: length, one: header.flags.contains(.reqOne)))
        }
    }

    /// The refusal for a range outside the export or (when `aligned`) off the minimum block size.
    private func checkRange(_ offset: UInt64, _ length: UInt64, aligned: Bool, beyond: NBDErrno) -> NBDServerRefusal? {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= export.info.size else {
            return NBDServerRefusal(beyond, "\(offset)+\(length) beyond the end of the export (\(export.info.size))")
        }
        let minimum = UInt64(max(export.blockSize.minimum, 1))
        guard offset % minimum == 0, !aligned || length % minimum == 0 else {
            return NBDServerRefusal(.einval, "\(offset)+\(length) not aligned to \(minimum) bytes")
        }
        return nil
    }
}

// MARK: - Replies

extension NBDServerSession {
    /// The success reply of a request without data: a simple reply, or with extended headers (where simple
    /// replies are not allowed) a `NONE` chunk.
    ///
    /// OCaml: `Nbd.Server.ok`
    public func okReply(cookie: UInt64, offset: UInt64) -> [UInt8] {
        guard extendedHeaders else { return NBDReplyHeader.simple(error: 0, cookie: cookie).encode() }
        return chunk(done: true, type: NBDChunkType.none, cookie: cookie, offset: offset, length: 0)
    }

    /// The failure reply: a simple reply with the errno, or an `ERROR` chunk carrying the message too.
    ///
    /// OCaml: `Nbd.Server.error`
    public func errorReply(cookie: UInt64, offset: UInt64, _ refusal: NBDServerRefusal) -> [UInt8] {
        guard structuredReplies else {
            return NBDReplyHeader.simple(error: refusal.errno.rawValue, cookie: cookie).encode()
        }
        let payload = NBDChunkPayload.error(refusal.errno, message: refusal.message)
        return chunk(done: true, type: NBDChunkType.error, cookie: cookie, offset: offset, length: payload.count)
            + payload
    }

    /// What precedes `length` bytes of READ data at `dataOffset`: the simple reply header (the whole read
    /// must follow), or an `OFFSET_DATA` chunk header and its offset. `done` marks the reply's last chunk.
    ///
    /// OCaml: `Nbd.Server.ok` (with the read data as its payload)
    public func dataReplyHeader(
        cookie: UInt64, requestOffset: UInt64, dataOffset: UInt64, length: UInt64, done: Bool
    ) -> [UInt8] {
        guard structuredReplies else { return NBDReplyHeader.simple(error: 0, cookie: cookie).encode() }
        return chunk(
            done: done, type: NBDChunkType.offsetData, cookie: cookie, offset: requestOffset, length: Int(length) + 8)
            + NBDChunkPayload.offsetDataPrefix(offset: dataOffset)
    }

    /// An `OFFSET_HOLE` chunk (structured replies only): `length` bytes at `holeOffset` read as zeroes.
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public func holeReply(cookie: UInt64, requestOffset: UInt64, holeOffset: UInt64, length: UInt32, done: Bool)
        -> [UInt8]
    {
        chunk(done: done, type: NBDChunkType.offsetHole, cookie: cookie, offset: requestOffset, length: 12)
            + NBDChunkPayload.offsetHole(offset: holeOffset, length: length)
    }

    /// The final `NONE` chunk of a structured reply whose content chunks did not carry `DONE`.
    ///
    /// OCaml: none
    public func doneReply(cookie: UInt64, requestOffset: UInt64) -> [UInt8] {
        chunk(done: true, type: NBDChunkType.none, cookie: cookie, offset: requestOffset, length: 0)
    }

    /// The reply to `BLOCK_STATUS`: one status chunk for `base:allocation`, marked done.
    ///
    /// OCaml: none (ocaml-nbd has no block status)
    public func blockStatusReply(cookie: UInt64, requestOffset: UInt64, extents: [NBDExtent]) -> [UInt8] {
        let payload = NBDChunkPayload.blockStatus(
            contextID: allocationContext ?? 0, extents: extents, extended: extendedHeaders)
        return chunk(
            done: true, type: NBDChunkPayload.blockStatusType(extended: extendedHeaders), cookie: cookie,
            offset: requestOffset, length: payload.count) + payload
    }

    private func chunk(done: Bool, type: UInt16, cookie: UInt64, offset: UInt64, length: Int) -> [UInt8] {
        NBDReplyHeader.chunk(
            extended: extendedHeaders, done: done, type: type, cookie: cookie, offset: offset, length: UInt64(length)
        ).encode()
    }
}
