public import XenCore

/// A decorator that checks every request before passing it on: each buffer a whole number of sectors,
/// the sector range inside the device, the device writable for writes and discards. A bad request fails
/// with ``BlockError/invalidRequest(_:)`` (or ``BlockError/isReadOnly``) and never reaches the base device.
///
/// OCaml: `Mirage_block_safe.Make` (its `Unsafe` error is ``BlockError/invalidRequest(_:)`` here)
public struct SafeBlockDevice<Base: BlockDevice>: BlockDevice {
    /// The device requests are forwarded to.
    public let base: Base

    /// Wraps `base`.
    ///
    /// OCaml: `Mirage_block_safe.Make(B)` applied to a connected `B.t`
    public init(_ base: Base) { self.base = base }

    /// OCaml: `Mirage_block_safe.get_info`
    public func info() async -> BlockDeviceInfo { await base.info() }

    /// OCaml: `Mirage_block_safe.read`
    public func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        let info = await base.info()
        _ = try info.validate(sector: sector, buffers: buffers)
        try await base.read(at: sector, into: buffers)
    }

    /// OCaml: `Mirage_block_safe.write`
    public func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        let info = await base.info()
        guard info.readWrite else { throw .isReadOnly }
        _ = try info.validate(sector: sector, buffers: buffers)
        try await base.write(at: sector, from: buffers)
    }

    /// Not in `Mirage_block_safe`: forwarded unchanged.
    public func flush() async throws(BlockError) { try await base.flush() }

    /// Not in `Mirage_block_safe`: the range is checked like a write's.
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        let info = await base.info()
        guard info.readWrite else { throw .isReadOnly }
        try info.validate(sector: sector, count: count)
        try await base.discard(at: sector, count: count)
    }

    /// Not in `Mirage_block_safe`: the base device's.
    public var supportsDiscard: Bool {
        get async { await base.supportsDiscard }
    }

    /// Not in `Mirage_block_safe`: the range is checked, then forwarded.
    ///
    /// OCaml: none (`Mirage_block_safe` has no allocation map)
    public func allocation(at sector: UInt64, count: UInt64) async throws(BlockError) -> [BlockExtent]? {
        try await base.info().validate(sector: sector, count: count)
        return try await base.allocation(at: sector, count: count)
    }

    /// Not in `Mirage_block_safe`: the range is checked like a write's.
    ///
    /// OCaml: none (`Mirage_block_safe` has no write-zeroes)
    public func writeZeroes(at sector: UInt64, count: UInt64, unmap: Bool, fast: Bool) async throws(BlockError) {
        let info = await base.info()
        guard info.readWrite else { throw .isReadOnly }
        try info.validate(sector: sector, count: count)
        try await base.writeZeroes(at: sector, count: count, unmap: unmap, fast: fast)
    }

    /// Not in `Mirage_block_safe`: always false, since checking a request needs the base's `info()`, which
    /// may suspend; the caller's ``read(at:into:)`` then checks it.
    ///
    /// OCaml: none (`Mirage_block_safe` reads through Lwt)
    public func readWithoutWaiting(at sector: UInt64, into buffers: [PageBuffer]) -> Bool { false }

    /// OCaml: `Mirage_block_safe.disconnect`
    public func disconnect() async { await base.disconnect() }
}
