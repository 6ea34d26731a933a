// Transmission-phase request headers (compact 28 bytes, extended 32 bytes).

/// A transmission request header.
///
/// OCaml: `Nbd.Protocol.Request`
public struct NBDRequest: Sendable, Equatable {
    /// Command flags.
    public var flags: NBDCommandFlags
    /// The command.
    public var command: NBDCommand
    /// Cookie (handle) that the reply echoes.
    public var cookie: UInt64
    /// Byte offset.
    public var offset: UInt64
    /// Byte length (payload length for WRITE).
    public var length: UInt64

    /// Memberwise initializer.
    public init(flags: NBDCommandFlags = [], command: NBDCommand, cookie: UInt64, offset: UInt64, length: UInt64) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.length = length
    }

    /// Bytes of a compact header.
    public static let compactSize = 28
    /// Bytes of an extended header.
    public static let extendedSize = 32

    /// Encodes the header; `extended` selects the 64-bit layout (only after `OPT_EXTENDED_HEADERS`).
    /// Callers keep compact lengths below 2^32.
    ///
    /// OCaml: `Nbd.Protocol.Request.marshal`
    public func encode(extended: Bool = false) -> [UInt8] {
        NBDRequestHeader(flags: flags, type: command.rawValue, cookie: cookie, offset: offset, length: length)
            .encode(extended: extended)
    }
}

/// A request header as it is on the wire, with the command type kept raw: the one place the compact and
/// extended request layouts are written and read (``NBDRequest`` encodes through it; a server decodes
/// with it and must answer unknown types with `EINVAL`, so it cannot map them onto ``NBDCommand`` first).
///
/// OCaml: `Nbd.Protocol.Request` (`marshal` / `unmarshal`)
public struct NBDRequestHeader: Sendable, Equatable {
    /// Command flags (unknown bits kept: a server rejects them).
    public var flags: NBDCommandFlags
    /// The `type` field.
    public var type: UInt16
    /// Cookie (handle) that the reply echoes.
    public var cookie: UInt64
    /// Byte offset.
    public var offset: UInt64
    /// The length field: payload length for WRITE (and, with extended headers, whenever `PAYLOAD_LEN` is
    /// set), else the effect length.
    public var length: UInt64

    /// Memberwise initializer.
    public init(flags: NBDCommandFlags = [], type: UInt16, cookie: UInt64, offset: UInt64, length: UInt64) {
        self.flags = flags
        self.type = type
        self.cookie = cookie
        self.offset = offset
        self.length = length
    }

    /// The command, or nil for a type this codec does not know.
    public var command: NBDCommand? { NBDCommand(rawValue: type) }

    /// Bytes of payload that follow this header on the wire: WRITE's data in compact headers; with extended
    /// headers, `length` whenever `PAYLOAD_LEN` is set (also on commands that must then fail with `EINVAL`).
    ///
    /// OCaml: none
    public func payloadLength(extended: Bool) -> UInt64 {
        if extended { return flags.contains(.payloadLength) ? length : 0 }
        return type == NBDCommand.write.rawValue ? length : 0
    }

    /// Encodes the header (28 bytes compact, 32 extended). Compact lengths are truncated to 32 bits.
    ///
    /// OCaml: `Nbd.Protocol.Request.marshal`
    public func encode(extended: Bool = false) -> [UInt8] {
        var writer = NBDWriter(capacity: extended ? NBDRequest.extendedSize : NBDRequest.compactSize)
        writer.put(extended ? NBDMagic.extendedRequest : NBDMagic.request)
        writer.put(flags.rawValue)
        writer.put(type)
        writer.put(cookie)
        writer.put(offset)
        if extended { writer.put(length) } else { writer.put(UInt32(truncatingIfNeeded: length)) }
        return writer.bytes
    }

    /// Decodes a header from the first 28 (compact) or 32 (extended) bytes of `bytes`, checking the magic
    /// that `extended` calls for (a compact header after `OPT_EXTENDED_HEADERS` is a protocol error).
    ///
    /// OCaml: `Nbd.Protocol.Request.unmarshal`
    public static func decode(_ bytes: UnsafeRawBufferPointer, extended: Bool) throws(NBDProtocolError)
        -> NBDRequestHeader
    {
        let size = extended ? NBDRequest.extendedSize : NBDRequest.compactSize
        guard bytes.count >= size, let base = bytes.baseAddress else { throw .truncated(what: "request header") }
        let magic = loadBE(base, 0, as: UInt32.self)
        guard magic == (extended ? NBDMagic.extendedRequest : NBDMagic.request) else {
            throw .badMagic(what: "request", got: UInt64(magic))
        }
        return NBDRequestHeader(
            flags: NBDCommandFlags(rawValue: loadBE(base, 4, as: UInt16.self)), type: loadBE(base, 6, as: UInt16.self),
            cookie: loadBE(base, 8, as: UInt64.self), offset: loadBE(base, 16, as: UInt64.self),
            length: extended ? loadBE(base, 24, as: UInt64.self) : UInt64(loadBE(base, 24, as: UInt32.self)))
    }

    /// ``decode(_:extended:)`` over an array.
    ///
    /// OCaml: `Nbd.Protocol.Request.unmarshal`
    public static func decode(_ bytes: [UInt8], extended: Bool) throws(NBDProtocolError) -> NBDRequestHeader {
        let result: Result<NBDRequestHeader, NBDProtocolError> = bytes.withUnsafeBytes { raw in
            do throws(NBDProtocolError) { return .success(try decode(raw, extended: extended)) } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

/// One extent of a `BLOCK_STATUS` reply.
///
/// OCaml: none
public struct NBDExtent: Sendable, Equatable {
    /// Length in bytes.
    public var length: UInt64
    /// Context-specific flags (``NBDAllocationFlags`` for `base:allocation`).
    public var flags: UInt64

    /// Memberwise initializer.
    public init(length: UInt64, flags: UInt64) {
        self.length = length
        self.flags = flags
    }
}
