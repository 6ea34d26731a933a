// The handshake: the server greeting, options and their replies. Pure codecs over byte arrays.

/// What the first 16 bytes a server sends say about its handshake style.
///
/// OCaml: `Nbd.Protocol.Announcement`
public enum NBDGreeting: Sendable, Equatable {
    /// Newstyle: two bytes of ``NBDHandshakeFlags`` follow.
    case newstyle
    /// Oldstyle: size, flags and 124 zero bytes follow (136 bytes).
    case oldstyle

    /// Decodes the 16-byte greeting.
    ///
    /// OCaml: `Nbd.Protocol.Announcement.unmarshal`
    public static func decode(_ bytes: [UInt8]) throws(NBDProtocolError) -> NBDGreeting {
        var reader = NBDReader(bytes, what: "greeting")
        let magic = try reader.uint64()
        guard magic == NBDMagic.initial else { throw .badMagic(what: "greeting", got: magic) }
        let second = try reader.uint64()
        switch second {
        case NBDMagic.option: return .newstyle
        case NBDMagic.oldstyle: return .oldstyle
        default: throw .badMagic(what: "handshake style", got: second)
        }
    }
}

/// The size and flags of an export: what `NBD_INFO_EXPORT`, `EXPORT_NAME` and oldstyle all carry.
///
/// OCaml: `Nbd.Protocol.DiskInfo`
public struct NBDExportInfo: Sendable, Equatable {
    /// Size in bytes.
    public var size: UInt64
    /// Transmission flags.
    public var flags: NBDTransmissionFlags

    /// Memberwise initializer.
    public init(size: UInt64, flags: NBDTransmissionFlags) {
        self.size = size
        self.flags = flags
    }

    /// Decodes the 10 bytes (size, flags) shared by `NBD_INFO_EXPORT`, `EXPORT_NAME` and oldstyle.
    ///
    /// OCaml: `Nbd.Protocol.DiskInfo.unmarshal`
    public static func decode(_ reader: inout NBDReader) throws(NBDProtocolError) -> NBDExportInfo {
        let size = try reader.uint64()
        let flags = NBDTransmissionFlags(rawValue: try reader.uint16())
        return NBDExportInfo(size: size, flags: flags)
    }
}

/// Size constraints from `NBD_INFO_BLOCK_SIZE`.
///
/// OCaml: none
public struct NBDBlockSize: Sendable, Equatable {
    /// Minimum block size (alignment of every offset and length).
    public var minimum: UInt32
    /// Preferred block size.
    public var preferred: UInt32
    /// Maximum payload of one request.
    public var maximum: UInt32

    /// Memberwise initializer.
    public init(minimum: UInt32, preferred: UInt32, maximum: UInt32) {
        self.minimum = minimum
        self.preferred = preferred
        self.maximum = maximum
    }

    /// What the spec says to assume when the server sends nothing: 1, 4096, 32 MiB.
    public static let `default` = NBDBlockSize(minimum: 1, preferred: 4096, maximum: 32 << 20)

    /// True when the values obey the spec (powers of two, ordered, min <= 64 KiB).
    public var isValid: Bool {
        minimum.nonzeroBitCount == 1 && preferred.nonzeroBitCount == 1 && minimum <= 65536
            && preferred >= max(minimum, 512) && maximum >= preferred && maximum % minimum == 0
    }
}

/// An option and its data, as a client sends it.
///
/// OCaml: `Nbd.Protocol.OptionRequestHeader.marshal`
public enum NBDOptionRequest {
    /// Encodes an option: IHAVEOPT, code, length, data.
    public static func encode(_ option: NBDOption, data: [UInt8] = []) -> [UInt8] {
        NBDOptionRequestHeader(option: option.rawValue, length: UInt32(truncatingIfNeeded: data.count)).encode() + data
    }

    /// The data of `OPT_GO` / `OPT_INFO`: export name and the info items requested.
    ///
    /// OCaml: none
    public static func goData(export: String, requests: [NBDInfoType]) -> [UInt8] {
        var writer = NBDWriter()
        writer.put(lengthPrefixed: export)
        writer.put(UInt16(truncatingIfNeeded: requests.count))
        for request in requests { writer.put(request.rawValue) }
        return writer.bytes
    }

    /// The data of `OPT_LIST_META_CONTEXT` / `OPT_SET_META_CONTEXT`.
    ///
    /// OCaml: none
    public static func metaContextData(export: String, queries: [String]) -> [UInt8] {
        var writer = NBDWriter()
        writer.put(lengthPrefixed: export)
        writer.put(UInt32(truncatingIfNeeded: queries.count))
        for query in queries { writer.put(lengthPrefixed: query) }
        return writer.bytes
    }
}

/// The 20-byte header of an option reply.
///
/// OCaml: `Nbd.Protocol.OptionResponseHeader`
public struct NBDOptionReplyHeader: Sendable, Equatable {
    /// The option this answers.
    public var option: UInt32
    /// The reply type.
    public var type: NBDOptionReplyType
    /// Bytes of data that follow.
    public var length: UInt32

    /// Size of the header on the wire.
    public static let size = 20

    /// Memberwise initializer.
    public init(option: UInt32, type: NBDOptionReplyType, length: UInt32) {
        self.option = option
        self.type = type
        self.length = length
    }

    /// Decodes and checks the magic. `maxLength` bounds the data a hostile server could make us buffer.
    ///
    /// OCaml: `Nbd.Protocol.OptionResponseHeader.unmarshal`
    public static func decode(_ bytes: [UInt8], maxLength: UInt32 = 1 << 20) throws(NBDProtocolError)
        -> NBDOptionReplyHeader
    {
        var reader = NBDReader(bytes, what: "option reply")
        let magic = try reader.uint64()
        guard magic == NBDMagic.optionReply else { throw .badMagic(what: "option reply", got: magic) }
        let option = try reader.uint32()
        let type = NBDOptionReplyType(rawValue: try reader.uint32())
        let length = try reader.uint32()
        guard length <= maxLength else {
            throw .oversize(what: "option reply", length: UInt64(length), limit: UInt64(maxLength))
        }
        return NBDOptionReplyHeader(option: option, type: type, length: length)
    }
}

/// One item of an `NBD_REP_INFO` reply.
///
/// OCaml: none
public enum NBDInfo: Sendable, Equatable {
    case export(NBDExportInfo)
    case name(String)
    case description(String)
    case blockSize(NBDBlockSize)
    /// An item type this client does not know; the spec says to ignore it.
    case unknown(UInt16)

    /// Decodes the data of an `NBD_REP_INFO` reply.
    public static func decode(_ data: [UInt8]) throws(NBDProtocolError) -> NBDInfo {
        var reader = NBDReader(data, what: "NBD_REP_INFO")
        let type = try reader.uint16()
        switch NBDInfoType(rawValue: type) {
        case .export?:
            guard reader.remaining == 10 else { throw .truncated(what: "NBD_INFO_EXPORT") }
            return .export(try NBDExportInfo.decode(&reader))
        case .name?: return .name(try reader.string(reader.remaining))
        case .description?: return .description(try reader.string(reader.remaining))
        case .blockSize?:
            guard reader.remaining == 12 else { throw .truncated(what: "NBD_INFO_BLOCK_SIZE") }
            return .blockSize(
                NBDBlockSize(minimum: try reader.uint32(), preferred: try reader.uint32(), maximum: try reader.uint32())
            )
        case nil: return .unknown(type)
        }
    }
}

/// Decoders for the other option replies.
///
/// OCaml: `Nbd.Protocol.Server` (for `NBD_REP_SERVER`)
public enum NBDOptionReplyData {
    /// `NBD_REP_SERVER`: the export name and its description.
    ///
    /// OCaml: `Nbd.Protocol.Server.unmarshal`
    public static func server(_ data: [UInt8]) throws(NBDProtocolError) -> (name: String, description: String) {
        var reader = NBDReader(data, what: "NBD_REP_SERVER")
        let length = try reader.uint32()
        guard length <= UInt32(reader.remaining) else { throw .truncated(what: "NBD_REP_SERVER") }
        let name = try reader.string(Int(length))
        return (name, try reader.string(reader.remaining))
    }

    /// `NBD_REP_META_CONTEXT`: the context id and its name.
    ///
    /// OCaml: none
    public static func metaContext(_ data: [UInt8]) throws(NBDProtocolError) -> (id: UInt32, name: String) {
        var reader = NBDReader(data, what: "NBD_REP_META_CONTEXT")
        let id = try reader.uint32()
        return (id, try reader.string(reader.remaining))
    }

    /// The reply to `NBD_OPT_EXPORT_NAME`: size, flags and (without NO_ZEROES) 124 zero bytes.
    ///
    /// OCaml: `Nbd.Protocol.NegotiateResponse.unmarshal`
    public static func exportName(_ data: [UInt8]) throws(NBDProtocolError) -> NBDExportInfo {
        var reader = NBDReader(data, what: "EXPORT_NAME reply")
        return try NBDExportInfo.decode(&reader)
    }
}
