// Transmission-phase reply headers and chunk payloads: the layouts a server writes and ``NBDReplyDecoder``
// reads. One place for each layout, used by both directions.

/// A reply header: simple (16 bytes), structured chunk (20 bytes) or extended chunk (32 bytes).
///
/// OCaml: `Nbd.Protocol.Reply` (simple replies only; ocaml-nbd has no structured or extended replies)
public enum NBDReplyHeader: Sendable, Equatable {
    /// `NBD_SIMPLE_REPLY_MAGIC`: an errno (0 for success) and the cookie; READ data follows on success.
    case simple(error: UInt32, cookie: UInt64)
    /// `NBD_STRUCTURED_REPLY_MAGIC`: one chunk of a structured reply.
    case structured(flags: UInt16, type: UInt16, cookie: UInt64, length: UInt32)
    /// `NBD_EXTENDED_REPLY_MAGIC`: one chunk with the request's offset and a 64-bit payload length.
    case extended(flags: UInt16, type: UInt16, cookie: UInt64, offset: UInt64, length: UInt64)

    /// A chunk header in the format the session negotiated: extended when `extended`, else structured
    /// (`offset` is the request's offset, carried only by extended headers).
    ///
    /// OCaml: none
    public static func chunk(
        extended: Bool, done: Bool, type: UInt16, cookie: UInt64, offset: UInt64, length: UInt64
    ) -> NBDReplyHeader {
        let flags = done ? NBDChunkType.flagDone : 0
        if extended { return .extended(flags: flags, type: type, cookie: cookie, offset: offset, length: length) }
        return .structured(flags: flags, type: type, cookie: cookie, length: UInt32(truncatingIfNeeded: length))
    }

    /// Bytes of a header that starts with `magic` (nil: not a reply magic).
    ///
    /// OCaml: `Nbd.Protocol.Reply.sizeof`
    public static func size(magic: UInt32) -> Int? {
        switch magic {
        case NBDMagic.simpleReply: 16
        case NBDMagic.structuredReply: 20
        case NBDMagic.extendedReply: 32
        default: nil
        }
    }

    /// The cookie the header answers.
    public var cookie: UInt64 {
        switch self {
        case .simple(_, let cookie), .structured(_, _, let cookie, _), .extended(_, _, let cookie, _, _): cookie
        }
    }

    /// Encodes the header.
    ///
    /// OCaml: `Nbd.Protocol.Reply.marshal`
    public func encode() -> [UInt8] {
        var writer = NBDWriter(capacity: 32)
        switch self {
        case .simple(let error, let cookie):
            writer.put(NBDMagic.simpleReply)
            writer.put(error)
            writer.put(cookie)
        case .structured(let flags, let type, let cookie, let length):
            writer.put(NBDMagic.structuredReply)
            writer.put(flags)
            writer.put(type)
            writer.put(cookie)
            writer.put(length)
        case .extended(let flags, let type, let cookie, let offset, let length):
            writer.put(NBDMagic.extendedReply)
            writer.put(flags)
            writer.put(type)
            writer.put(cookie)
            writer.put(offset)
            writer.put(length)
        }
        return writer.bytes
    }

    /// Decodes a whole header (its size given by its magic, see ``size(magic:)``).
    ///
    /// OCaml: `Nbd.Protocol.Reply.unmarshal`
    public static func decode(_ bytes: [UInt8]) throws(NBDProtocolError) -> NBDReplyHeader {
        var reader = NBDReader(bytes, what: "reply header")
        let magic = try reader.uint32()
        switch magic {
        case NBDMagic.simpleReply:
            return .simple(error: try reader.uint32(), cookie: try reader.uint64())
        case NBDMagic.structuredReply:
            return .structured(
                flags: try reader.uint16(), type: try reader.uint16(), cookie: try reader.uint64(),
                length: try reader.uint32())
        case NBDMagic.extendedReply:
            return .extended(
                flags: try reader.uint16(), type: try reader.uint16(), cookie: try reader.uint64(),
                offset: try reader.uint64(), length: try reader.uint64())
        default:
            throw .badMagic(what: "reply", got: UInt64(magic))
        }
    }
}

/// Encoders for the payloads of structured and extended reply chunks (``NBDReplyDecoder`` decodes them).
///
/// OCaml: none (ocaml-nbd has no structured replies)
public enum NBDChunkPayload {
    /// The 8-byte prefix of an `NBD_REPLY_TYPE_OFFSET_DATA` payload; the data follows.
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public static func offsetDataPrefix(offset: UInt64) -> [UInt8] {
        var writer = NBDWriter(capacity: 8)
        writer.put(offset)
        return writer.bytes
    }

    /// `NBD_REPLY_TYPE_OFFSET_HOLE`: 12 bytes in both header formats (the hole size stays 32 bits).
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public static func offsetHole(offset: UInt64, length: UInt32) -> [UInt8] {
        var writer = NBDWriter(capacity: 12)
        writer.put(offset)
        writer.put(length)
        return writer.bytes
    }

    /// `NBD_REPLY_TYPE_BLOCK_STATUS` (32-bit descriptors; lengths and flags truncated, so callers keep them
    /// below 2^32) or, when `extended`, `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (a descriptor count, then 64-bit
    /// descriptors). The chunk type to send with it is ``blockStatusType(extended:)``.
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public static func blockStatus(contextID: UInt32, extents: [NBDExtent], extended: Bool) -> [UInt8] {
        var writer = NBDWriter(capacity: 8 + extents.count * (extended ? 16 : 8))
        writer.put(contextID)
        if extended {
            writer.put(UInt32(truncatingIfNeeded: extents.count))
            for extent in extents {
                writer.put(extent.length)
                writer.put(extent.flags)
            }
        } else {
            for extent in extents {
                writer.put(UInt32(truncatingIfNeeded: extent.length))
                writer.put(UInt32(truncatingIfNeeded: extent.flags))
            }
        }
        return writer.bytes
    }

    /// The chunk type of ``blockStatus(contextID:extents:extended:)``.
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public static func blockStatusType(extended: Bool) -> UInt16 {
        extended ? NBDChunkType.blockStatusExtended : NBDChunkType.blockStatus
    }

    /// `NBD_REPLY_TYPE_ERROR`, or `NBD_REPLY_TYPE_ERROR_OFFSET` when `offset` is given. The message is cut
    /// to the spec's 4096-byte string limit. The chunk type to send with it is ``errorType(offset:)``.
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public static func error(_ errno: NBDErrno, message: String = "", offset: UInt64? = nil) -> [UInt8] {
        let text = Array(message.utf8.prefix(4096))
        var writer = NBDWriter(capacity: 14 + text.count)
        writer.put(errno.rawValue)
        writer.put(UInt16(text.count))
        writer.put(bytes: text)
        if let offset { writer.put(offset) }
        return writer.bytes
    }

    /// The chunk type of ``error(_:message:offset:)``.
    ///
    /// OCaml: none (ocaml-nbd has no structured replies)
    public static func errorType(offset: UInt64?) -> UInt16 {
        offset == nil ? NBDChunkType.error : NBDChunkType.errorOffset
    }
}
