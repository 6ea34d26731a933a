public import XenCore

/// What a block device is: its mode, sector size and size.
///
/// OCaml: `Mirage_block.info`
public struct BlockDeviceInfo: Sendable, Equatable, CustomStringConvertible {
    /// True if the device accepts writes.
    public var readWrite: Bool
    /// Bytes per sector: every buffer and offset is a multiple of it.
    public var sectorSize: Int
    /// The size of the device in sectors of `sectorSize` bytes.
    public var sizeSectors: UInt64

    public init(readWrite: Bool, sectorSize: Int, sizeSectors: UInt64) {
        self.readWrite = readWrite
        self.sectorSize = sectorSize
        self.sizeSectors = sizeSectors
    }

    /// The size in bytes.
    public var sizeBytes: UInt64 { sizeSectors * UInt64(sectorSize) }

    public var description: String {
        "\(readWrite ? "rw" : "ro") sector_size=\(sectorSize) size_sectors=\(sizeSectors)"
    }
}

/// Why a block operation failed. Mirrors `Mirage_block.error` and `write_error`, with context the OCaml
/// variants lack.
///
/// OCaml: `Mirage_block.error` / `Mirage_block.write_error`
public enum BlockError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The device was disconnected (by the application or the other end); an unknown amount of a write
    /// may have happened.
    ///
    /// OCaml: `Disconnected` (polymorphic variant)
    case disconnected
    /// The operation is not implemented by this device; nothing was done.
    ///
    /// OCaml: `Unimplemented` (polymorphic variant)
    case unimplemented(operation: String)
    /// The device is read-only; nothing was written.
    ///
    /// OCaml: `Is_read_only` (polymorphic variant)
    case isReadOnly
    /// A buffer is not a whole number of sectors, or a request lies outside the device.
    case invalidRequest(String)
    /// The device or transport reported an error; `context` says which operation and where, `underlying`
    /// keeps the implementation's own typed error when there is one (an `NBDError` from `NBDBlockDevice`, a
    /// `BlockFrontError` from `BlockFront`): match on it with `as?`.
    ///
    /// OCaml: `Mirage_block.error` (implementation-specific variants)
    case io(context: String, underlying: (any Error)? = nil)

    public var description: String {
        switch self {
        case .disconnected: "the block device is disconnected"
        case .unimplemented(let operation): "\(operation) is not implemented by this block device"
        case .isReadOnly: "the block device is read-only"
        case .invalidRequest(let why): "invalid block request: \(why)"
        case .io(let context, _): "block I/O error: \(context)"
        }
    }

    /// Equal cases with equal payloads; for ``io(context:underlying:)`` only the contexts are compared (an
    /// underlying error need not be `Equatable`).
    public static func == (lhs: BlockError, rhs: BlockError) -> Bool {
        switch (lhs, rhs) {
        case (.disconnected, .disconnected), (.isReadOnly, .isReadOnly): true
        case (.unimplemented(let a), .unimplemented(let b)): a == b
        case (.invalidRequest(let a), .invalidRequest(let b)): a == b
        case (.io(let a, _), .io(let b, _)): a == b
        default: false
        }
    }
}

/// A sector-addressed block device: the `Mirage_block.S` contract.
///
/// Each buffer passed to `read` or `write` is a whole number of sectors long; any number of buffers may be
/// passed and they are read or written back to back starting at `sector`. Buffers are used in place, not
/// copied: do not reuse them until the call returns. Once submitted, a request is not abandoned on
/// cancellation (the other side may still be writing into the pages).
///
/// OCaml: `Mirage_block.S`
public protocol BlockDevice: Sendable {
    /// The device's characteristics.
    ///
    /// OCaml: `Mirage_block.S.get_info`
    func info() async -> BlockDeviceInfo

    /// Reads from `sector` into `buffers`, back to back.
    ///
    /// OCaml: `Mirage_block.S.read`
    func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError)

    /// Writes `buffers`, back to back, starting at `sector`.
    ///
    /// OCaml: `Mirage_block.S.write`
    func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError)

    /// Makes every completed write durable. Devices without a cache may return at once.
    /// Not in `Mirage_block.S`; blkif `BLKIF_OP_FLUSH_DISKCACHE`, NBD `NBD_CMD_FLUSH`.
    func flush() async throws(BlockError)

    /// Tells the device `count` sectors from `sector` are unused (their contents become unspecified).
    /// Not in `Mirage_block.S`; blkif `BLKIF_OP_DISCARD`, NBD `NBD_CMD_TRIM`.
    func discard(at sector: UInt64, count: UInt64) async throws(BlockError)

    /// Whether the device implements ``discard(at:count:)``: stated by the device, never learnt by trying one.
    /// A Xen backend advertises `feature-discard` only for a device that says so (and is writable).
    ///
    /// OCaml: none (`Mirage_block.info` has no discard); Linux: xen-blkback's `xen_blkbk_discard` asks
    /// `bdev_max_discard_sectors`
    var supportsDiscard: Bool { get async }

    /// Disconnects. Never fails; later operations fail with ``BlockError/disconnected``.
    ///
    /// OCaml: `Mirage_device.S.disconnect`
    func disconnect() async

    /// The allocation map from `sector`: consecutive extents, the first starting at `sector`, covering at
    /// most `count` sectors (fewer is fine: callers ask again from where it ends) and never past the end.
    /// Nil when the device does not know (everything is then data).
    ///
    /// OCaml: none (`Mirage_block.S` has no allocation map; ocaml-nbd has no block status)
    func allocation(at sector: UInt64, count: UInt64) async throws(BlockError) -> [BlockExtent]?

    /// Makes `count` sectors from `sector` read as zeroes. `unmap` lets the device deallocate them (holes);
    /// `fast` asks it to fail with ``BlockError/unimplemented(operation:)`` rather than zero no faster than
    /// a write would (NBD's `FAST_ZERO`).
    ///
    /// OCaml: none (blkif has no write-zeroes; NBD `NBD_CMD_WRITE_ZEROES`)
    func writeZeroes(at sector: UInt64, count: UInt64, unmap: Bool, fast: Bool) async throws(BlockError)

    /// Reads like ``read(at:into:)`` but only if it can finish on the calling thread without blocking or
    /// suspending (memory, data in a file's page cache); returns false, with the buffers' contents
    /// unspecified, when the caller must use ``read(at:into:)`` instead (also for a request that would fail:
    /// `read` reports why). Lets an I/O thread answer a read without a thread hop.
    ///
    /// OCaml: none (an Lwt read that is already resolved)
    func readWithoutWaiting(at sector: UInt64, into buffers: [PageBuffer]) -> Bool

    /// The `count` sectors from `sector` as a range of the device's backing file, lent for a zero-copy send
    /// (`sendfile`), if all of it is in the page cache now; nil when the device has no such file, part of
    /// the range would need the disk, or the request is out of range (``read(at:into:)`` says why). The bytes
    /// sent are the file's at the time of sending, as with a read that runs then.
    ///
    /// OCaml: none (mirage-block has no zero-copy path)
    func cachedFileRange(at sector: UInt64, count: UInt64) -> FileRangeLease?
}

/// A run of sectors with one allocation state.
///
/// OCaml: none (NBD `base:allocation` extents; `SEEK_DATA`/`SEEK_HOLE`)
public struct BlockExtent: Sendable, Equatable {
    /// Length in sectors (never 0).
    public var sectors: UInt64
    /// Not allocated (a hole).
    public var isHole: Bool
    /// Known to read as zeroes.
    public var isZero: Bool

    /// Memberwise initializer.
    public init(sectors: UInt64, isHole: Bool, isZero: Bool) {
        self.sectors = sectors
        self.isHole = isHole
        self.isZero = isZero
    }
}

extension BlockDevice {
    /// Default: no cache to flush.
    public func flush() async throws(BlockError) {}

    /// Default: discard is not supported.
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        throw .unimplemented(operation: "discard")
    }

    /// Default: false, as the default ``discard(at:count:)`` fails with ``BlockError/unimplemented(operation:)``.
    /// A device that implements discard says so.
    ///
    /// OCaml: none (`Mirage_block.info` has no discard)
    public var supportsDiscard: Bool { false }

    /// Default: the device does not know its allocation.
    ///
    /// OCaml: none (`Mirage_block.S` has no allocation map)
    public func allocation(at sector: UInt64, count: UInt64) async throws(BlockError) -> [BlockExtent]? { nil }

    /// Default: writes zero-filled buffers (never fast, never unmapping).
    ///
    /// OCaml: none (`Mirage_block.S` has no write-zeroes)
    public func writeZeroes(at sector: UInt64, count: UInt64, unmap: Bool, fast: Bool) async throws(BlockError) {
        if fast { throw .unimplemented(operation: "fast zero") }
        try await writeZeroBuffers(at: sector, count: count)
    }

    /// Default: never without waiting.
    ///
    /// OCaml: none (Lwt has no notion of a read that cannot wait)
    public func readWithoutWaiting(at sector: UInt64, into buffers: [PageBuffer]) -> Bool { false }

    /// Default: no backing file to lend.
    ///
    /// OCaml: none (mirage-block has no zero-copy path)
    public func cachedFileRange(at sector: UInt64, count: UInt64) -> FileRangeLease? { nil }

    /// Writes zero-filled buffers over `count` sectors from `sector`, 1 MiB at a time (the portable way to
    /// zero; devices with a faster one use it in ``writeZeroes(at:count:unmap:fast:)``).
    ///
    /// OCaml: none (mirage-block's `Mirage_block_compare`/`sparse_copy` write zero pages the same way)
    public func writeZeroBuffers(at sector: UInt64, count: UInt64) async throws(BlockError) {
        let info = await info()
        guard info.readWrite else { throw .isReadOnly }
        try info.validate(sector: sector, count: count)
        let perBuffer = UInt64(max(1, (1 << 20) / info.sectorSize))
        let zeros = PageBuffer(pages: (Int(perBuffer) * info.sectorSize + xenPageSize - 1) / xenPageSize)
        var at = sector
        while at < sector + count {
            let take = min(perBuffer, sector + count - at)
            try await write(at: at, from: [zeros.slice(from: 0, count: Int(take) * info.sectorSize)])
            at += take
        }
    }
}

// MARK: - Request validation shared by every implementation

extension BlockDeviceInfo {
    /// Checks that every buffer is a whole number of sectors and that the request lies inside the device;
    /// returns the number of sectors covered.
    public func validate(sector: UInt64, buffers: [PageBuffer]) throws(BlockError) -> UInt64 {
        var total: UInt64 = 0
        for (index, buffer) in buffers.enumerated() {
            guard buffer.count % sectorSize == 0 else {
                throw .invalidRequest("buffer \(index) is \(buffer.count) bytes, not a multiple of \(sectorSize)")
            }
            total += UInt64(buffer.count / sectorSize)
        }
        try validate(sector: sector, count: total)
        return total
    }

    /// Checks that `count` sectors from `sector` lie inside the device.
    public func validate(sector: UInt64, count: UInt64) throws(BlockError) {
        let (end, overflow) = sector.addingReportingOverflow(count)
        guard !overflow, end <= sizeSectors else {
            throw .invalidRequest("sectors \(sector)..<\(sector &+ count) beyond the end (\(sizeSectors))")
        }
    }
}
