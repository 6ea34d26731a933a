public import NBDProtocol
import NIOCore
public import XenCore

// MARK: - Byte-addressed commands (libnbd's API surface)

extension NBDClient {
    /// Reads from byte `offset` into `buffers`, back to back (any lengths, as long as the server's minimum
    /// block size divides them and `offset`), split into requests of at most ``maxRequestBytes`` that are
    /// all in flight at once. Holes read as zeroes. Byte-addressed, as ocaml-nbd's client (whose sector
    /// size is 1); ``blockDevice`` is the sector-addressed `Mirage_block.S` view.
    ///
    /// OCaml: `Nbd.Client.read` (libnbd: `nbd_pread`)
    public func read(
        at offset: UInt64, into buffers: [PageBuffer], isolation: isolated (any Actor)? = #isolation
    ) async throws(NBDError) {
        let length = UInt64(buffers.reduce(0) { $0 + $1.count })
        try check(offset: offset, length: length, write: false)
        if length <= UInt64(maxRequestBytes) {
            // One request (the common case): no piece lists.
            _ = try await send(.read, offset: offset, length: length, buffers: buffers).reply()
            return
        }
        let futures = pieces(offset: offset, length: length).map { piece in
            send(
                .read, offset: piece.offset, length: piece.length,
                buffers: PageBuffer.slices(of: buffers, from: Int(piece.offset - offset), count: Int(piece.length)))
        }
        _ = try await awaitAll(futures)
    }

    /// Writes `buffers` back to back from byte `offset`; `fua` forces them to stable storage first.
    /// Byte-addressed, like ``read(at:into:isolation:)``.
    ///
    /// OCaml: `Nbd.Client.write` (libnbd: `nbd_pwrite`)
    public func write(
        at offset: UInt64, from buffers: [PageBuffer], fua: Bool = false,
        isolation: isolated (any Actor)? = #isolation
    ) async throws(NBDError) {
        let length = UInt64(buffers.reduce(0) { $0 + $1.count })
        try check(offset: offset, length: length, write: true)
        let flags = try fuaFlag(fua)
        let futures = pieces(offset: offset, length: length).map { piece in
            send(
                .write, flags: flags, offset: piece.offset, length: piece.length,
                payload: PageBuffer.slices(of: buffers, from: Int(piece.offset - offset), count: Int(piece.length)))
        }
        _ = try await awaitAll(futures)
    }

    /// `NBD_CMD_WRITE` of a range of an open file (a lease from `FileBlockDevice.cachedFileRange`, or one of
    /// your own), at byte `offset`. On a plain connection the kernel sends the file's page-cache pages with
    /// `sendfile`, without a copy through user space; over TLS the range is read into pages first. The lease
    /// is held until the request is sent.
    ///
    /// OCaml: none (`Nbd.Client.write` takes buffers; libnbd has no zero-copy write)
    public func write(
        at offset: UInt64, fromFile file: FileRangeLease, fua: Bool = false,
        isolation: isolated (any Actor)? = #isolation
    ) async throws(NBDError) {
        let length = UInt64(file.count)
        try check(offset: offset, length: length, write: true)
        let flags = try fuaFlag(fua)
        let futures = pieces(offset: offset, length: length).map { piece in
            send(
                .write, flags: flags, offset: piece.offset, length: piece.length,
                file: file.subrange(from: Int(piece.offset - offset), count: Int(piece.length)))
        }
        _ = try await awaitAll(futures)
    }

    /// `NBD_CMD_FLUSH`: every completed write reaches stable storage. A no-op when the server has no
    /// write cache to flush (it does not advertise `SEND_FLUSH`).
    ///
    /// OCaml: none (Mirage_block 3 has no flush; libnbd: `nbd_flush`)
    public func flush() async throws(NBDError) {
        if closed { throw .disconnected }
        guard flags.contains(.sendFlush) else { return }
        _ = try await awaitAll([send(.flush, offset: 0, length: 0)])
    }

    /// `NBD_CMD_TRIM`: the range's contents become unspecified.
    ///
    /// OCaml: none (libnbd: `nbd_trim`)
    public func trim(at offset: UInt64, length: UInt64, fua: Bool = false) async throws(NBDError) {
        try check(offset: offset, length: length, write: true)
        guard flags.contains(.sendTrim) else { throw .unsupported("trim") }
        try await rangeCommand(.trim, flags: try fuaFlag(fua), offset: offset, length: length)
    }

    /// `NBD_CMD_WRITE_ZEROES`. `noHole` asks the server to allocate; `fastZero` asks it to fail with
    /// `ENOTSUP` rather than zero slowly.
    ///
    /// OCaml: none (libnbd: `nbd_zero`)
    public func writeZeroes(
        at offset: UInt64, length: UInt64, fua: Bool = false, noHole: Bool = false, fastZero: Bool = false
    ) async throws(NBDError) {
        try check(offset: offset, length: length, write: true)
        guard flags.contains(.sendWriteZeroes) else { throw .unsupported("write_zeroes") }
        var commandFlags = try fuaFlag(fua)
        if noHole { commandFlags.insert(.noHole) }
        if fastZero {
            guard flags.contains(.sendFastZero) else { throw .unsupported("fast_zero") }
            commandFlags.insert(.fastZero)
        }
        try await rangeCommand(.writeZeroes, flags: commandFlags, offset: offset, length: length)
    }

    /// `NBD_CMD_CACHE`: asks the server to prefetch the range.
    ///
    /// OCaml: none (libnbd: `nbd_cache`)
    public func cache(at offset: UInt64, length: UInt64) async throws(NBDError) {
        try check(offset: offset, length: length, write: false)
        guard flags.contains(.sendCache) else { throw .unsupported("cache") }
        try await rangeCommand(.cache, flags: [], offset: offset, length: length)
    }

    /// `NBD_CMD_BLOCK_STATUS` for a negotiated metadata context (`base:allocation` by default): the
    /// extents the server describes from `offset` (they may cover less than `length`, or a little more).
    ///
    /// OCaml: none (libnbd: `nbd_block_status`)
    public func blockStatus(at offset: UInt64, length: UInt64, context: String = "base:allocation")
        async throws(NBDError) -> [NBDExtent]
    {
        try check(offset: offset, length: length, write: false)
        guard let id = session.metaContexts[context] else { throw .unsupported("metadata context \(context)") }
        let length = min(length, Self.rangeLimit(session))
        let results = try await awaitAll([send(.blockStatus, offset: offset, length: length)])
        return results.flatMap { $0.extents.filter { $0.contextID == id }.flatMap(\.extents) }
    }

    // MARK: - Helpers

    private var closed: Bool { !isOpen }

    func fuaFlag(_ fua: Bool) throws(NBDError) -> NBDCommandFlags {
        guard fua else { return [] }
        guard flags.contains(.sendFUA) else { throw .unsupported("FUA") }
        return .fua
    }

    /// Largest length of a command without payload: 32 bits in compact headers (kept aligned).
    private static func rangeLimit(_ session: NBDSession) -> UInt64 {
        let minimum = UInt64(max(session.blockSize.minimum, 1))
        let limit: UInt64 = session.extendedHeaders ? 1 << 40 : (1 << 32) - 1
        return limit - limit % max(minimum, 4096)
    }

    private func rangeCommand(_ command: NBDCommand, flags: NBDCommandFlags, offset: UInt64, length: UInt64)
        async throws(NBDError)
    {
        let limit = Self.rangeLimit(session)
        var futures: [NBDTicket] = []
        var at = offset
        while at < offset + length {
            let take = min(limit, offset + length - at)
            futures.append(send(command, flags: flags, offset: at, length: take))
            at += take
        }
        _ = try await awaitAll(futures)
    }
}
