/// The 16-byte header in front of every xenstore message (`struct xsd_sockmsg`), little-endian.
///
/// OCaml: the header fields of `Xs_protocol.t` (`get_ty`, `get_rid`, `get_tid`, `get_data` length)
public struct XenStoreHeader: Hashable, Sendable {
    /// Bytes on the wire.
    public static let size = 16

    /// The message type.
    public var type: XenStoreMessageType
    /// Chosen by the client, echoed by the server; 0 in watch events.
    public var requestID: UInt32
    /// The transaction, 0 for none.
    public var transactionID: UInt32
    /// Payload bytes that follow.
    public var length: UInt32

    /// A header with the given fields. OCaml: none (headers are built by `Xs_protocol.create`)
    public init(type: XenStoreMessageType, requestID: UInt32, transactionID: UInt32, length: UInt32) {
        self.type = type
        self.requestID = requestID
        self.transactionID = transactionID
        self.length = length
    }

    /// Decodes the first 16 bytes of `bytes`; nil if there are fewer.
    ///
    /// OCaml: `Xs_protocol.Parser.input` (header state)
    public init?(decoding bytes: ArraySlice<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        let base = bytes.startIndex
        func word(_ offset: Int) -> UInt32 {
            UInt32(bytes[base + offset]) | UInt32(bytes[base + offset + 1]) << 8
                | UInt32(bytes[base + offset + 2]) << 16 | UInt32(bytes[base + offset + 3]) << 24
        }
        self.init(
            type: XenStoreMessageType(rawValue: word(0)), requestID: word(4), transactionID: word(8),
            length: word(12))
    }

    /// Appends the 16 wire bytes to `buffer`.
    ///
    /// OCaml: `Xs_protocol.to_string` (header part)
    public func encode(into buffer: inout [UInt8]) {
        for word in [type.rawValue, requestID, transactionID, length] {
            buffer.append(UInt8(truncatingIfNeeded: word))
            buffer.append(UInt8(truncatingIfNeeded: word >> 8))
            buffer.append(UInt8(truncatingIfNeeded: word >> 16))
            buffer.append(UInt8(truncatingIfNeeded: word >> 24))
        }
    }
}

/// One xenstore message: header fields plus the raw payload.
///
/// OCaml: `Xs_protocol.t`
public struct XenStorePacket: Hashable, Sendable {
    /// The message type.
    public var type: XenStoreMessageType
    /// Chosen by the client, echoed by the server; 0 in watch events.
    public var requestID: UInt32
    /// The transaction, 0 for none.
    public var transactionID: UInt32
    /// The payload bytes (NUL-separated strings for most types).
    public var payload: [UInt8]

    /// A packet with the given fields. OCaml: `Xs_protocol.create`
    public init(type: XenStoreMessageType, requestID: UInt32 = 0, transactionID: UInt32 = 0, payload: [UInt8]) {
        self.type = type
        self.requestID = requestID
        self.transactionID = transactionID
        self.payload = payload
    }

    /// The header that precedes this payload.
    public var header: XenStoreHeader {
        XenStoreHeader(
            type: type, requestID: requestID, transactionID: transactionID, length: UInt32(payload.count))
    }

    /// Appends header and payload to `buffer`.
    ///
    /// OCaml: `Xs_protocol.to_string`
    public func encode(into buffer: inout [UInt8]) {
        header.encode(into: &buffer)
        buffer.append(contentsOf: payload)
    }

    /// Header and payload as one byte array.
    ///
    /// OCaml: `Xs_protocol.to_string`
    public var bytes: [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(XenStoreHeader.size + payload.count)
        encode(into: &buffer)
        return buffer
    }
}

/// An incremental packet parser: feed it bytes in any chunking, take whole packets out.
///
/// A header announcing more than `maximumPayload` bytes is an error that poisons the parser: the stream has
/// lost framing (C xenstored closes such a connection).
///
/// OCaml: `Xs_protocol.Parser` (`start`, `input`, `state`)
public struct XenStorePacketParser: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    private var failure: XenStoreProtocolError?
    /// The largest payload accepted.
    public let maximumPayload: Int

    /// A parser in its initial state. OCaml: `Xs_protocol.Parser.start`
    public init(maximumPayload: Int = XenStoreLimits.payloadMax) {
        self.maximumPayload = maximumPayload
    }

    /// Bytes received but not yet returned as packets.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds received bytes. OCaml: `Xs_protocol.Parser.input`
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            // Drop consumed bytes once they are at least half the buffer: amortised O(1) per byte.
            buffer.removeSubrange(0..<start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete packet, nil if more bytes are needed; throws `payloadTooLarge` (forever after) if a
    /// header announces an oversize payload.
    ///
    /// OCaml: `Xs_protocol.Parser.state` (`Packet` / `Need_more_data` / `Parser_failed`)
    public mutating func next() throws(XenStoreProtocolError) -> XenStorePacket? {
        if let failure { throw failure }
        guard let header = XenStoreHeader(decoding: buffer[start...]) else { return nil }
        // The length is read once into a local and checked before it is used to slice anything.
        let length = header.length
        guard length <= UInt32(maximumPayload) else {
            let error = XenStoreProtocolError.payloadTooLarge(
                type: header.type, length: length, limit: maximumPayload)
            failure = error
            throw error
        }
        let total = XenStoreHeader.size + Int(length)
        guard buffer.count - start >= total else { return nil }
        let payloadStart = start + XenStoreHeader.size
        let packet = XenStorePacket(
            type: header.type, requestID: header.requestID, transactionID: header.transactionID,
            payload: Array(buffer[payloadStart..<(start + total)]))
        start += total
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        return packet
    }
}
