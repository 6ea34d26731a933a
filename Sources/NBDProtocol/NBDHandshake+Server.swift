// The server's side of the handshake codecs: what a server writes (greeting, option replies, info items)
// and reads (client flags, option headers, option data). Pure functions over byte arrays.

extension NBDGreeting {
    /// The 18 bytes a fixed-newstyle server sends first: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
    ///
    /// OCaml: `Nbd.Protocol.Announcement.marshal` + `Nbd.Protocol.Negotiate.marshal` (`V2`)
    public static func encodeNewstyle(flags: NBDHandshakeFlags) -> [UInt8] {
        var writer = NBDWriter(capacity: 18)
        writer.put(NBDMagic.initial)
        writer.put(NBDMagic.option)
        writer.put(flags.rawValue)
        return writer.bytes
    }
}

extension NBDClientFlags {
    /// Decodes the 4 bytes of client flags that answer the greeting.
    ///
    /// OCaml: `Nbd.Protocol.NegotiateResponse.unmarshal`
    public static func decode(_ bytes: [UInt8]) throws(NBDProtocolError) -> NBDClientFlags {
        var reader = NBDReader(bytes, what: "client flags")
        return NBDClientFlags(rawValue: try reader.uint32())
    }
}

extension NBDExportInfo {
    /// Encodes size and flags (10 bytes), as `NBD_INFO_EXPORT` and the `EXPORT_NAME` reply carry them.
    ///
    /// OCaml: `Nbd.Protocol.DiskInfo.marshal`
    public func encode(into writer: inout NBDWriter) {
        writer.put(size)
        writer.put(flags.rawValue)
    }
}

/// The 16-byte header of an option a client sends.
///
/// OCaml: `Nbd.Protocol.OptionRequestHeader`
public struct NBDOptionRequestHeader: Sendable, Equatable {
    /// The option code, raw: unknown options get `NBD_REP_ERR_UNSUP`, so they must be representable.
    public var option: UInt32
    /// Bytes of option data that follow.
    public var length: UInt32

    /// Size of the header on the wire.
    public static let size = 16

    /// Memberwise initializer.
    public init(option: UInt32, length: UInt32) {
        self.option = option
        self.length = length
    }

    /// Decodes and checks the `IHAVEOPT` magic.
    ///
    /// OCaml: `Nbd.Protocol.OptionRequestHeader.unmarshal`
    public static func decode(_ bytes: [UInt8]) throws(NBDProtocolError) -> NBDOptionRequestHeader {
        var reader = NBDReader(bytes, what: "option")
        let magic = try reader.uint64()
        guard magic == NBDMagic.option else { throw .badMagic(what: "option", got: magic) }
        return NBDOptionRequestHeader(option: try reader.uint32(), length: try reader.uint32())
    }

    /// Encodes the header.
    ///
    /// OCaml: `Nbd.Protocol.OptionRequestHeader.marshal`
    public func encode() -> [UInt8] {
        var writer = NBDWriter(capacity: Self.size)
        writer.put(NBDMagic.option)
        writer.put(option)
        writer.put(length)
        return writer.bytes
    }
}

/// Decoders for the data of the options a server accepts (the encoders are beside them in
/// ``NBDOptionRequest``). Every string is checked against the spec's limits (at most 4096 bytes, no NUL) and
/// every count against the bytes actually present.
extension NBDOptionRequest {
    /// Longest string the spec allows (export names, queries).
    public static let maxString = 4096

    /// `OPT_GO` / `OPT_INFO`: the export name and the raw `NBD_INFO_*` types asked for (unknown types are
    /// kept so the server can ignore them, as the spec says).
    ///
    /// OCaml: none
    public static func decodeGoData(_ data: [UInt8]) throws(NBDProtocolError) -> (export: String, requests: [UInt16]) {
        var reader = NBDReader(data, what: "OPT_GO data")
        let export = try string(&reader)
        let count = Int(try reader.uint16())
        guard reader.remaining == count * 2 else { throw .truncated(what: "OPT_GO information requests") }
        var requests: [UInt16] = []
        requests.reserveCapacity(count)
        for _ in 0..<count { requests.append(try reader.uint16()) }
        return (export, requests)
    }

    /// `OPT_LIST_META_CONTEXT` / `OPT_SET_META_CONTEXT`: the export name and the queries. `maxQueries`
    /// bounds the work a client can ask for in one option.
    ///
    /// OCaml: none
    public static func decodeMetaContextData(_ data: [UInt8], maxQueries: Int = 1024) throws(NBDProtocolError)
        -> (export: String, queries: [String])
    {
        var reader = NBDReader(data, what: "meta context data")
        let export = try string(&reader)
        let count = try reader.uint32()
        guard count <= maxQueries else {
            throw .oversize(what: "meta context queries", length: UInt64(count), limit: UInt64(maxQueries))
        }
        var queries: [String] = []
        for _ in 0..<count { queries.append(try string(&reader)) }
        guard reader.remaining == 0 else { throw .unexpected("bytes after the meta context queries") }
        return (export, queries)
    }

    /// `OPT_EXPORT_NAME`: the whole data is the name.
    ///
    /// OCaml: `Nbd.Protocol.ExportName.unmarshal`
    public static func decodeExportName(_ data: [UInt8]) throws(NBDProtocolError) -> String {
        try validated(data)
    }

    /// A 32-bit length and that many bytes of string.
    private static func string(_ reader: inout NBDReader) throws(NBDProtocolError) -> String {
        let length = try reader.uint32()
        guard length <= UInt32(min(reader.remaining, maxString)) else {
            throw .oversize(what: "string", length: UInt64(length), limit: UInt64(min(reader.remaining, maxString)))
        }
        return try validated(try reader.bytes(Int(length)))
    }

    private static func validated(_ bytes: [UInt8]) throws(NBDProtocolError) -> String {
        guard bytes.count <= maxString else {
            throw .oversize(what: "string", length: UInt64(bytes.count), limit: UInt64(maxString))
        }
        guard !bytes.contains(0) else { throw .unexpected("NUL in a string") }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension NBDOptionReplyHeader {
    /// Encodes the header.
    ///
    /// OCaml: `Nbd.Protocol.OptionResponseHeader.marshal`
    public func encode() -> [UInt8] {
        var writer = NBDWriter(capacity: Self.size)
        writer.put(NBDMagic.optionReply)
        writer.put(option)
        writer.put(type.rawValue)
        writer.put(length)
        return writer.bytes
    }

    /// One whole option reply: header and data.
    ///
    /// OCaml: `Nbd.Protocol.OptionResponseHeader.marshal` followed by the reply's data
    public static func encode(option: UInt32, type: NBDOptionReplyType, data: [UInt8] = []) -> [UInt8] {
        NBDOptionReplyHeader(option: option, type: type, length: UInt32(truncatingIfNeeded: data.count)).encode()
            + data
    }
}

extension NBDInfo {
    /// Encodes the data of an `NBD_REP_INFO` reply (``decode(_:)`` reads it back).
    ///
    /// OCaml: none
    public func encode() -> [UInt8] {
        var writer = NBDWriter(capacity: 18)
        switch self {
        case .export(let info):
            writer.put(NBDInfoType.export.rawValue)
            info.encode(into: &writer)
        case .name(let name):
            writer.put(NBDInfoType.name.rawValue)
            writer.put(bytes: name.utf8)
        case .description(let text):
            writer.put(NBDInfoType.description.rawValue)
            writer.put(bytes: text.utf8)
        case .blockSize(let size):
            writer.put(NBDInfoType.blockSize.rawValue)
            writer.put(size.minimum)
            writer.put(size.preferred)
            writer.put(size.maximum)
        case .unknown(let type):
            writer.put(type)
        }
        return writer.bytes
    }
}

extension NBDOptionReplyData {
    /// The data of `NBD_REP_SERVER`: the name's length, the name, then the description.
    ///
    /// OCaml: `Nbd.Protocol.Server.marshal`
    public static func encodeServer(name: String, description: String = "") -> [UInt8] {
        var writer = NBDWriter()
        writer.put(lengthPrefixed: name)
        writer.put(bytes: description.utf8)
        return writer.bytes
    }

    /// The data of `NBD_REP_META_CONTEXT`: the context id and its name.
    ///
    /// OCaml: none
    public static func encodeMetaContext(id: UInt32, name: String) -> [UInt8] {
        var writer = NBDWriter()
        writer.put(id)
        writer.put(bytes: name.utf8)
        return writer.bytes
    }

    /// The reply to `NBD_OPT_EXPORT_NAME`: size, flags and, unless the client set `NO_ZEROES`, 124 zeroes.
    ///
    /// OCaml: `Nbd.Protocol.NegotiateResponse.marshal` (`DiskInfo` + padding)
    public static func encodeExportName(_ info: NBDExportInfo, zeroes: Bool) -> [UInt8] {
        var writer = NBDWriter(capacity: 134)
        info.encode(into: &writer)
        if zeroes { writer.put(bytes: repeatElement(0, count: 124)) }
        return writer.bytes
    }
}
