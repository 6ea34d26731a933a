// Big-endian byte codecs: every NBD integer is in network byte order.

/// Why bytes from the server could not be accepted. Any of these ends the connection.
///
/// OCaml: `Nbd.Protocol` decode failures (`Failure` / `Result.Error` strings in ocaml-nbd)
public enum NBDProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A magic number was wrong (`what` names the message).
    case badMagic(what: String, got: UInt64)
    /// A message was shorter than its fixed part or its stated length.
    case truncated(what: String)
    /// A length field exceeds what the client accepts or what its request allows.
    case oversize(what: String, length: UInt64, limit: UInt64)
    /// A reply names a cookie with no request in flight.
    case unknownCookie(UInt64)
    /// A data or hole chunk lies outside the request it answers.
    case outsideRequest(cookie: UInt64, offset: UInt64, length: UInt64)
    /// A chunk type or reply that the spec says must end the connection.
    case unexpected(String)

    /// A readable rendering.
    public var description: String {
        switch self {
        case .badMagic(let what, let got): "bad \(what) magic 0x\(String(got, radix: 16))"
        case .truncated(let what): "truncated \(what)"
        case .oversize(let what, let length, let limit): "\(what) length \(length) exceeds \(limit)"
        case .unknownCookie(let cookie): "reply for unknown cookie \(cookie)"
        case .outsideRequest(let cookie, let offset, let length):
            "chunk \(offset)+\(length) outside request \(cookie)"
        case .unexpected(let what): "unexpected \(what)"
        }
    }
}

/// Appends big-endian integers and bytes to an array.
///
/// OCaml: none (ocaml-nbd uses `Cstruct.BE.set_*` on fixed layouts)
public struct NBDWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    /// An empty writer with room for `capacity` bytes.
    public init(capacity: Int = 32) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends one byte.
    public mutating func put(_ value: UInt8) { bytes.append(value) }
    /// Appends a big-endian `UInt16`.
    public mutating func put(_ value: UInt16) { putBE(UInt64(value), width: 2) }
    /// Appends a big-endian `UInt32`.
    public mutating func put(_ value: UInt32) { putBE(UInt64(value), width: 4) }
    /// Appends a big-endian `UInt64`.
    public mutating func put(_ value: UInt64) { putBE(value, width: 8) }
    /// Appends raw bytes.
    public mutating func put(bytes other: some Sequence<UInt8>) { bytes.append(contentsOf: other) }
    /// Appends a string as UTF-8 prefixed by its 32-bit length.
    public mutating func put(lengthPrefixed string: String) {
        let utf8 = Array(string.utf8)
        put(UInt32(truncatingIfNeeded: utf8.count))
        put(bytes: utf8)
    }

    private mutating func putBE(_ value: UInt64, width: Int) {
        for shift in stride(from: (width - 1) * 8, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}

/// Reads big-endian integers from untrusted bytes; every read is bounds-checked and throws when short.
///
/// OCaml: none (ocaml-nbd uses `Cstruct.BE.get_*`, which raise on short buffers)
public struct NBDReader: Sendable {
    private let bytes: [UInt8]
    /// Position of the next byte.
    public private(set) var position: Int
    /// What is being decoded, for error messages.
    public let what: String

    /// A reader over `bytes`.
    public init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.position = 0
        self.what = what
    }

    /// Bytes not yet read.
    public var remaining: Int { bytes.count - position }

    /// Reads a `UInt8`.
    public mutating func uint8() throws(NBDProtocolError) -> UInt8 { UInt8(try be(1)) }
    /// Reads a big-endian `UInt16`.
    public mutating func uint16() throws(NBDProtocolError) -> UInt16 { UInt16(try be(2)) }
    /// Reads a big-endian `UInt32`.
    public mutating func uint32() throws(NBDProtocolError) -> UInt32 { UInt32(try be(4)) }
    /// Reads a big-endian `UInt64`.
    public mutating func uint64() throws(NBDProtocolError) -> UInt64 { try be(8) }

    /// Reads `count` raw bytes.
    public mutating func bytes(_ count: Int) throws(NBDProtocolError) -> [UInt8] {
        guard count >= 0, count <= remaining else { throw .truncated(what: what) }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    /// Reads `count` bytes as UTF-8 (invalid sequences are repaired, never trusted).
    public mutating func string(_ count: Int) throws(NBDProtocolError) -> String {
        String(decoding: try bytes(count), as: UTF8.self)
    }

    /// Reads everything left.
    public mutating func rest() -> [UInt8] {
        defer { position = bytes.count }
        return Array(bytes[position...])
    }

    private mutating func be(_ width: Int) throws(NBDProtocolError) -> UInt64 {
        guard width <= remaining else { throw .truncated(what: what) }
        var value: UInt64 = 0
        for index in position..<position + width { value = value << 8 | UInt64(bytes[index]) }
        position += width
        return value
    }
}

/// Reads a big-endian integer from raw memory (the reply hot path, no arrays).
@inline(__always)
func loadBE<T: FixedWidthInteger>(_ base: UnsafeRawPointer, _ offset: Int, as: T.Type) -> T {
    T(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
}
