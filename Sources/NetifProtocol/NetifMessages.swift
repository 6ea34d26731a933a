public import XenCore

/// `struct netif_tx_request`: one fragment of a frame the frontend transmits.
///
/// In the first request of a frame `size` is the whole frame; in the others, the fragment. Decoding reads
/// each field once and checks nothing: ``NetifTxAssembler`` judges the values.
/// OCaml: `TX.Request.t`
public struct NetifTxRequest: Sendable, Equatable {
    /// The granted page holding the fragment.
    public var grant: GrantRef
    /// Where the fragment starts in that page.
    public var offset: UInt16
    /// `NETTXF_*`.
    public var flags: NetifTxFlags
    /// Echoed in the response.
    public var id: UInt16
    /// The frame size (first request) or the fragment size (the others).
    public var size: UInt16

    /// A request.
    ///
    /// OCaml: `{ TX.Request.gref; offset; flags; id; size; extras = [] }`
    public init(grant: GrantRef, offset: UInt16, flags: NetifTxFlags, id: UInt16, size: UInt16) {
        self.grant = grant
        self.offset = offset
        self.flags = flags
        self.id = id
        self.size = size
    }

    /// Writes the request into a tx ring slot (12 bytes).
    ///
    /// OCaml: `TX.Request.write`
    public func encode(into slot: PageBuffer) {
        slot.setUInt32(grant.rawValue, at: 0)
        slot.setUInt16(offset, at: 4)
        slot.setUInt16(flags.rawValue, at: 6)
        slot.setUInt16(id, at: 8)
        slot.setUInt16(size, at: 10)
    }

    /// Reads a request from a copy of a tx ring slot.
    ///
    /// OCaml: `TX.Request.read` (which also checks the offset; here the assembler does)
    public static func decode(from slot: PageBuffer) -> NetifTxRequest {
        NetifTxRequest(
            grant: GrantRef(slot.uint32(at: 0)), offset: slot.uint16(at: 4),
            flags: NetifTxFlags(rawValue: slot.uint16(at: 6)), id: slot.uint16(at: 8), size: slot.uint16(at: 10))
    }
}

/// `struct netif_tx_response`: the backend's answer to one tx request (or `NULL` for an extra-info slot).
///
/// OCaml: `TX.Response.t`
public struct NetifTxResponse: Sendable, Equatable {
    /// The id of the request answered (meaningless for `NULL`).
    public var id: UInt16
    /// The outcome.
    public var status: NetifStatus

    /// A response.
    ///
    /// OCaml: `{ TX.Response.id; status }`
    public init(id: UInt16, status: NetifStatus) {
        self.id = id
        self.status = status
    }

    /// Writes the response into a tx ring slot (the 4 response bytes; the rest of the slot is left alone).
    ///
    /// OCaml: `TX.Response.write`
    public func encode(into slot: PageBuffer) {
        slot.setUInt16(id, at: 0)
        slot.setUInt16(UInt16(bitPattern: status.rawValue), at: 2)
    }

    /// Reads a response; a status netif.h does not define is an error.
    ///
    /// OCaml: `TX.Response.read` (which raises `Failure` there)
    public static func decode(from slot: PageBuffer) throws(NetifProtocolError) -> NetifTxResponse {
        let id = slot.uint16(at: 0)
        let raw = Int16(bitPattern: slot.uint16(at: 2))
        guard let status = NetifStatus(rawValue: raw) else { throw .unknownStatus(raw, id: id) }
        return NetifTxResponse(id: id, status: status)
    }
}

/// `struct netif_rx_request`: a page the frontend offers the backend to copy a received fragment into.
///
/// OCaml: `RX.Request.t`
public struct NetifRxRequest: Sendable, Equatable {
    /// Echoed in the response.
    public var id: UInt16
    /// The granted (writable) page.
    public var grant: GrantRef

    /// A request.
    ///
    /// OCaml: `{ RX.Request.id; gref }`
    public init(id: UInt16, grant: GrantRef) {
        self.id = id
        self.grant = grant
    }

    /// Writes the request into an rx ring slot (8 bytes, pad zeroed).
    ///
    /// OCaml: `RX.Request.write`
    public func encode(into slot: PageBuffer) {
        slot.setUInt16(id, at: 0)
        slot.setUInt16(0, at: 2)
        slot.setUInt32(grant.rawValue, at: 4)
    }

    /// Reads a request from a copy of an rx ring slot.
    ///
    /// OCaml: `RX.Request.read`
    public static func decode(from slot: PageBuffer) -> NetifRxRequest {
        NetifRxRequest(id: slot.uint16(at: 0), grant: GrantRef(slot.uint32(at: 4)))
    }
}

/// `struct netif_rx_response`: one fragment of a frame the backend delivered, or an error.
///
/// OCaml: `RX.Response.t`
public struct NetifRxResponse: Sendable, Equatable {
    /// The id of the request whose page holds the fragment.
    public var id: UInt16
    /// Where the fragment starts in that page.
    public var offset: UInt16
    /// `NETRXF_*`.
    public var flags: NetifRxFlags
    /// Positive: the fragment's size; zero or negative: a `NETIF_RSP_*` error.
    public var status: Int16

    /// A response.
    ///
    /// OCaml: `{ RX.Response.id; offset; flags; size }`
    public init(id: UInt16, offset: UInt16, flags: NetifRxFlags, status: Int16) {
        self.id = id
        self.offset = offset
        self.flags = flags
        self.status = status
    }

    /// Writes the response into an rx ring slot.
    ///
    /// OCaml: `RX.Response.write`
    public func encode(into slot: PageBuffer) {
        slot.setUInt16(id, at: 0)
        slot.setUInt16(offset, at: 2)
        slot.setUInt16(flags.rawValue, at: 4)
        slot.setUInt16(UInt16(bitPattern: status), at: 6)
    }

    /// Reads a response from a copy of an rx ring slot (values judged by ``NetifRxAssembler``).
    ///
    /// OCaml: `RX.Response.read`
    public static func decode(from slot: PageBuffer) -> NetifRxResponse {
        NetifRxResponse(
            id: slot.uint16(at: 0), offset: slot.uint16(at: 2), flags: NetifRxFlags(rawValue: slot.uint16(at: 4)),
            status: Int16(bitPattern: slot.uint16(at: 6)))
    }
}
