public import XenCore

/// `struct blkif_response`: id u64 @0, operation u8 @8, status i16 @10 (16 bytes on x86_64).
///
/// OCaml: `Blkproto.Res.t`
public struct BlkifResponse: Sendable, Equatable {
    /// The id of the request answered.
    public var id: UInt64
    /// The operation byte of the request answered (as the backend echoes it; untrusted).
    public var operation: UInt8
    /// The outcome.
    public var status: BlkifStatus

    /// A response.
    public init(id: UInt64, operation: UInt8, status: BlkifStatus) {
        self.id = id
        self.operation = operation
        self.status = status
    }

    /// Writes the response into a ring slot.
    ///
    /// OCaml: `Blkproto.Res.write_response`
    public func encode(into slot: PageBuffer) {
        slot.setUInt64(id, at: 0)
        slot.setUInt8(operation, at: 8)
        slot.setUInt8(0, at: 9)
        slot.setUInt16(UInt16(bitPattern: status.rawValue), at: 10)
        slot.setUInt32(0, at: 12)
    }

    /// Reads a response from a ring slot: each field once; an unknown status is an error.
    ///
    /// OCaml: `Blkproto.Res.read_response`
    public static func decode(from slot: PageBuffer) throws(BlkifDecodeError) -> BlkifResponse {
        guard slot.count >= Blkif.responseSize else { throw .truncated(slot.count) }
        let id = slot.uint64(at: 0)
        let operation = slot.uint8(at: 8)
        let raw = Int16(bitPattern: slot.uint16(at: 10))
        guard let status = BlkifStatus(rawValue: raw) else { throw .unknownStatus(raw, id: id) }
        return BlkifResponse(id: id, operation: operation, status: status)
    }
}
