public import BlockDevice
import NBDProtocol
public import XenCore

/// An ``NBDClient`` seen as a sector-addressed `BlockDevice` (`Mirage_block.S`): sectors of 512 bytes,
/// or the server's minimum block size if larger. The size is rounded down to whole sectors, so the tail
/// of an odd-sized export is reachable only through the client's byte-addressed calls.
///
/// OCaml: `Nbd.Client` as a `Mirage_block.S` (whose sector size is 1; ours is the block layer's)
public struct NBDBlockDevice: BlockDevice {
    /// The client requests go through.
    public let client: NBDClient

    /// The view of `client`.
    ///
    /// OCaml: none (the OCaml client is its own `Mirage_block.S`)
    public init(_ client: NBDClient) { self.client = client }

    /// Bytes per sector: 512, or the server's minimum block size if larger.
    public var sectorSize: Int { max(512, Int(client.session.blockSize.minimum)) }

    /// The export's mode, sector size and size in whole sectors, known without a suspension point (`info()`
    /// returns the same).
    ///
    /// OCaml: `Nbd.Client.get_info` (a value here, not an Lwt promise)
    public var deviceInfo: BlockDeviceInfo {
        BlockDeviceInfo(
            readWrite: !client.flags.contains(.readOnly), sectorSize: sectorSize,
            sizeSectors: client.size / UInt64(sectorSize))
    }

    /// OCaml: `Nbd.Client.get_info`
    public func info() async -> BlockDeviceInfo { deviceInfo }

    /// Reads whole sectors from `sector` into `buffers`.
    ///
    /// OCaml: `Nbd.Client.read`
    public func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        let info = await info()
        _ = try info.validate(sector: sector, buffers: buffers)
        do { try await client.read(at: sector * UInt64(info.sectorSize), into: buffers) } catch {
            throw error.blockError
        }
    }

    /// Writes whole sectors from `buffers` starting at `sector`.
    ///
    /// OCaml: `Nbd.Client.write`
    public func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        let info = await info()
        guard info.readWrite else { throw .isReadOnly }
        _ = try info.validate(sector: sector, buffers: buffers)
        do { try await client.write(at: sector * UInt64(info.sectorSize), from: buffers) } catch {
            throw error.blockError
        }
    }

    /// `NBD_CMD_FLUSH` (a no-op when the server does not advertise it).
    ///
    /// OCaml: none (Mirage_block 3 has no flush; libnbd: `nbd_flush`)
    public func flush() async throws(BlockError) {
        do { try await client.flush() } catch { throw error.blockError }
    }

    /// `NBD_CMD_TRIM` of `count` sectors from `sector`.
    ///
    /// OCaml: none (libnbd: `nbd_trim`)
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        let info = await info()
        guard info.readWrite else { throw .isReadOnly }
        try info.validate(sector: sector, count: count)
        let size = UInt64(info.sectorSize)
        do { try await client.trim(at: sector * size, length: count * size) } catch { throw error.blockError }
    }

    /// True when the server advertised `NBD_FLAG_SEND_TRIM` (``discard(at:count:)`` sends `NBD_CMD_TRIM`).
    ///
    /// OCaml: none (libnbd: `nbd_can_trim`)
    public var supportsDiscard: Bool { client.flags.contains(.sendTrim) }

    /// `NBD_CMD_WRITE_ZEROES` (`NO_HOLE` unless `unmap`, `FAST_ZERO` when `fast`); without the server's
    /// support, zero-filled writes (or, when `fast`, `BlockError.unimplemented(operation:)`).
    ///
    /// OCaml: none (libnbd: `nbd_zero`)
    public func writeZeroes(at sector: UInt64, count: UInt64, unmap: Bool, fast: Bool) async throws(BlockError) {
        let info = await info()
        guard info.readWrite else { throw .isReadOnly }
        try info.validate(sector: sector, count: count)
        guard client.flags.contains(.sendWriteZeroes), !fast || client.flags.contains(.sendFastZero) else {
            if fast { throw .unimplemented(operation: "fast zero") }
            return try await writeZeroBuffers(at: sector, count: count)
        }
        let size = UInt64(info.sectorSize)
        do {
            try await client.writeZeroes(at: sector * size, length: count * size, noHole: !unmap, fastZero: fast)
        } catch .serverError(_, _, .enotsup, _) where fast {
            throw .unimplemented(operation: "fast zero")
        } catch { throw error.blockError }
    }

    /// `NBD_CMD_BLOCK_STATUS` on `base:allocation`, in whole sectors (a sector with any data is data); nil
    /// when the server offers no allocation map.
    ///
    /// OCaml: none (libnbd: `nbd_block_status`)
    public func allocation(at sector: UInt64, count: UInt64) async throws(BlockError) -> [BlockExtent]? {
        let info = await info()
        try info.validate(sector: sector, count: count)
        guard count > 0, client.session.metaContexts["base:allocation"] != nil else { return nil }
        let size = UInt64(info.sectorSize)
        let extents: [NBDExtent]
        do { extents = try await client.blockStatus(at: sector * size, length: count * size) } catch {
            throw error.blockError
        }
        var result: [BlockExtent] = []
        var at = sector * size
        var described = sector
        let end = (sector + count) * size
        for extent in extents where at < end && extent.length > 0 {
            let start = at
            at = min(end, at + extent.length)
            // A sector partly in this extent is described conservatively: as data.
            let exact = start % size == 0 && at % size == 0
            let stop = (at + size - 1) / size
            guard stop > described else { continue }
            let flags = NBDAllocationFlags(rawValue: extent.flags)
            let hole = exact && flags.contains(.hole)
            let zero = exact && flags.contains(.zero)
            if let last = result.last, last.isHole == hole, last.isZero == zero {
                result[result.count - 1].sectors += stop - described
            } else {
                result.append(BlockExtent(sectors: stop - described, isHole: hole, isZero: zero))
            }
            described = stop
        }
        return result.isEmpty ? nil : result
    }

    /// Disconnects the client.
    ///
    /// OCaml: `Nbd.Client.disconnect`
    public func disconnect() async { await client.disconnect() }
}
