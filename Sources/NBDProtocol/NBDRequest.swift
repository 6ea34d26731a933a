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
        var writer = NBDWriter(capacity: extended ? Self.extendedSize : Self.compactSize)
        writer.put(extended ? NBDMagic.extendedRequest : NBDMagic.request)
        writer.put(flags.rawValue)
        writer.put(command.rawValue)
        writer.put(cookie)
        writer.put(offset)
        if extended { writer.put(length) } else { writer.put(UInt32(truncatingIfNeeded: length)) }
        return writer.bytes
    }
}

/// One extent of a `BLOCK_STATUS` reply.
///
/// OCaml: not in OCaml
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
