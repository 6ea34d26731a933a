/// Constants of the blkif ABI (xen/include/public/io/blkif.h), x86_64 layout.
///
/// OCaml: `Blkproto.Req` / `Blkproto.Res` constants in mirage-block-xen
public enum Blkif {
    /// Segments carried directly in a request (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
    public static let maxDirectSegments = 11
    /// Indirect pages one request may name (`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
    public static let maxIndirectPages = 8
    /// Segment descriptors per indirect page (4096 / sizeof(struct blkif_request_segment)).
    public static let segmentsPerIndirectPage = 512
    /// The most segments an indirect request can carry.
    public static let maxIndirectSegments = maxIndirectPages * segmentsPerIndirectPage
    /// Bytes in one hardware sector as blkif counts them: every sector field is in these units (Xen 4.20 rule).
    public static let sectorUnit = 512
    /// 512-byte units in one page: a segment's `first_sect`/`last_sect` range over 0...7.
    public static let unitsPerPage = 8
    /// `sizeof(struct blkif_request)` on x86_64; also the ring entry size (the union's largest member).
    public static let requestSize = 112
    /// `sizeof(struct blkif_request_indirect)` on x86_64.
    public static let indirectRequestSize = 64
    /// `sizeof(struct blkif_request_discard)` on x86_64.
    public static let discardRequestSize = 32
    /// `sizeof(struct blkif_response)` on x86_64.
    public static let responseSize = 16
    /// `sizeof(struct blkif_request_segment)`.
    public static let segmentSize = 8
    /// The ring entry: `sizeof(union blkif_sring_entry)`.
    public static let ringEntrySize = requestSize
    /// The `protocol` value a 64-bit frontend writes.
    public static let protocolX86_64 = "x86_64-abi"
    /// The `protocol` value of a 32-bit frontend (not served: its request layout differs).
    public static let protocolX86_32 = "x86_32-abi"
    /// Discard flag: the discarded data must be erased securely (`BLKIF_DISCARD_SECURE`).
    public static let discardSecure: UInt8 = 1

    /// `VDISK_CDROM` bit of the backend's `info` key.
    public static let infoCDROM: UInt32 = 1
    /// `VDISK_REMOVABLE` bit of the backend's `info` key.
    public static let infoRemovable: UInt32 = 2
    /// `VDISK_READONLY` bit of the backend's `info` key.
    public static let infoReadOnly: UInt32 = 4
}

/// A request's operation (`BLKIF_OP_*`).
///
/// OCaml: `Blkproto.Req.op`
public enum BlkifOperation: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Read into the segments.
    case read = 0
    /// Write from the segments.
    case write = 1
    /// Write after every earlier request is durable (`feature-barrier`).
    case writeBarrier = 2
    /// Flush the disk cache (`feature-flush-cache`); no segments.
    case flushDiskCache = 3
    /// Reserved (was `BLKIF_OP_RESERVED_1`); always refused.
    case reserved1 = 4
    /// Discard a sector range (`feature-discard`).
    case discard = 5
    /// The segments are in indirect pages (`feature-max-indirect-segments`).
    case indirect = 6

    public var description: String {
        switch self {
        case .read: "READ"
        case .write: "WRITE"
        case .writeBarrier: "WRITE_BARRIER"
        case .flushDiskCache: "FLUSH_DISKCACHE"
        case .reserved1: "RESERVED_1"
        case .discard: "DISCARD"
        case .indirect: "INDIRECT"
        }
    }
}

/// A response's status (`BLKIF_RSP_*`).
///
/// OCaml: `Blkproto.Res.rsp`
public enum BlkifStatus: Int16, Sendable, CustomStringConvertible {
    /// `BLKIF_RSP_OKAY`
    case okay = 0
    /// `BLKIF_RSP_ERROR`
    case error = -1
    /// `BLKIF_RSP_EOPNOTSUPP`
    case notSupported = -2

    public var description: String {
        switch self {
        case .okay: "OKAY"
        case .error: "ERROR"
        case .notSupported: "EOPNOTSUPP"
        }
    }
}

/// Why a ring entry could not be decoded. The entry came from the other domain, so every case is the
/// peer's fault and answered with an error response (backend) or a disconnect (frontend).
///
/// OCaml: `Blkproto.Req.read_request` fails with `Failure`
public enum BlkifDecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The operation byte is not a known `BLKIF_OP_*`.
    case unknownOperation(UInt8, id: UInt64)
    /// Too many (or no) segments for the operation.
    case badSegmentCount(Int, id: UInt64)
    /// A segment's sector range is empty or beyond its page.
    case badSegment(index: Int, first: UInt8, last: UInt8, id: UInt64)
    /// The response's status is not OKAY, ERROR or EOPNOTSUPP.
    case unknownStatus(Int16, id: UInt64)
    /// The entry is shorter than the layout.
    case truncated(Int)

    public var description: String {
        switch self {
        case .unknownOperation(let op, let id): "request \(id): unknown operation \(op)"
        case .badSegmentCount(let count, let id): "request \(id): bad segment count \(count)"
        case .badSegment(let index, let first, let last, let id):
            "request \(id): segment \(index) has sectors \(first)...\(last)"
        case .unknownStatus(let status, let id): "response \(id): unknown status \(status)"
        case .truncated(let count): "entry of \(count) bytes is too short"
        }
    }
}
