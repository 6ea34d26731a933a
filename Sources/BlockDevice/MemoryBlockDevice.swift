import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A block device held in memory: the twin of mirage-block's `Mirage_block_mem`.
///
/// The memory is an anonymous mapping, so pages are only allocated when first written (a large device
/// costs nothing until used), and whole pages that are discarded or zeroed with `unmap` are given back.
/// The device tracks which 64 KiB chunks were ever written since their last unmap: those are its data,
/// the rest holes (``allocation(at:count:)``).
///
/// OCaml: `Mirage_block_mem.connect`
public final class MemoryBlockDevice: BlockDevice {
    private struct State {
        var connected = true
        /// One bit per chunk: written since the last unmap.
        var allocated: [UInt64]
    }

    /// Bytes per allocation chunk.
    public static let chunkSize = 64 << 10

    private let storage: PageBuffer
    /// The device's mode, sector size and size, known without a suspension point (`info()` returns the same):
    /// `deviceInfo.sizeSectors`, `deviceInfo.sizeBytes`.
    ///
    /// OCaml: `Mirage_block_mem.get_info` (a value here, not an Lwt promise)
    public let deviceInfo: BlockDeviceInfo
    private let state: Mutex<State>
    /// Whether chunks are whole sectors (else the device reports no allocation map).
    private let tracksAllocation: Bool

    /// A zero-filled device of `sizeSectors` sectors of `sectorSize` bytes.
    ///
    /// OCaml: `Mirage_block_mem.connect`
    public init(sizeSectors: UInt64, sectorSize: Int = 512, readWrite: Bool = true) {
        precondition(sectorSize > 0 && sizeSectors > 0)
        let bytes = Int(sizeSectors) * sectorSize
        let mapped = (bytes + xenPageSize - 1) / xenPageSize * xenPageSize
        let base = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let base, Int(bitPattern: base) != -1 else { fatalError("mmap(\(mapped)) failed: \(errno)") }
        let storage = PageStorage(borrowing: base, byteCount: mapped) { pointer, count in _ = munmap(pointer, count) }
        self.storage = PageBuffer(storage: storage, offset: 0, count: bytes)
        self.deviceInfo = BlockDeviceInfo(readWrite: readWrite, sectorSize: sectorSize, sizeSectors: sizeSectors)
        let chunks = (bytes + Self.chunkSize - 1) / Self.chunkSize
        self.state = Mutex(State(allocated: [UInt64](repeating: 0, count: (chunks + 63) / 64)))
        self.tracksAllocation = Self.chunkSize % sectorSize == 0
    }

    /// OCaml: `Mirage_block_mem.get_info`
    public func info() async -> BlockDeviceInfo { deviceInfo }

    /// OCaml: `Mirage_block_mem.read`
    public func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        try checkConnected()
        _ = try deviceInfo.validate(sector: sector, buffers: buffers)
        copyOut(at: sector, into: buffers)
    }

    /// A memory copy never waits.
    ///
    /// OCaml: none (`Mirage_block_mem.read` resolves at once)
    public func readWithoutWaiting(at sector: UInt64, into buffers: [PageBuffer]) -> Bool {
        guard state.withLock({ $0.connected }), (try? deviceInfo.validate(sector: sector, buffers: buffers)) != nil
        else { return false }
        copyOut(at: sector, into: buffers)
        return true
    }

    private func copyOut(at sector: UInt64, into buffers: [PageBuffer]) {
        let offset = Int(sector) * deviceInfo.sectorSize
        PageBuffer.copy(from: [storage.slice(from: offset, count: storage.count - offset)], to: buffers)
    }

    /// OCaml: `Mirage_block_mem.write`
    public func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        try checkConnected()
        guard deviceInfo.readWrite else { throw .isReadOnly }
        let count = try deviceInfo.validate(sector: sector, buffers: buffers)
        let offset = Int(sector) * deviceInfo.sectorSize
        PageBuffer.copy(from: buffers, to: [storage.slice(from: offset, count: storage.count - offset)])
        mark(sector: sector, count: count, allocated: true)
    }

    public func flush() async throws(BlockError) { try checkConnected() }

    /// Zeroes the discarded sectors, so a later read is deterministic; whole chunks become holes.
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        try await writeZeroes(at: sector, count: count, unmap: true, fast: false)
    }

    /// True: ``discard(at:count:)`` zeroes the sectors and gives whole chunks back.
    public var supportsDiscard: Bool { true }

    /// Always fast: zeroes the bytes, gives whole pages back and, with `unmap`, turns whole chunks into holes.
    ///
    /// OCaml: none (`Mirage_block_mem` has no write-zeroes)
    public func writeZeroes(at sector: UInt64, count: UInt64, unmap: Bool, fast: Bool) async throws(BlockError) {
        try checkConnected()
        guard deviceInfo.readWrite else { throw .isReadOnly }
        try deviceInfo.validate(sector: sector, count: count)
        let start = Int(sector) * deviceInfo.sectorSize
        let end = start + Int(count) * deviceInfo.sectorSize
        // Whole pages inside the range: MADV_DONTNEED makes a private anonymous page read as zero again.
        let firstPage = (start + xenPageSize - 1) / xenPageSize * xenPageSize
        let lastPage = end / xenPageSize * xenPageSize
        if lastPage > firstPage, madvise(storage.pointer + firstPage, lastPage - firstPage, MADV_DONTNEED) == 0 {
            memset(storage.pointer + start, 0, firstPage - start)
            memset(storage.pointer + lastPage, 0, end - lastPage)
        } else {
            memset(storage.pointer + start, 0, end - start)
        }
        if unmap { mark(sector: sector, count: count, allocated: false) }
    }

    /// The chunks written since their last unmap are data, the others holes that read as zeroes.
    ///
    /// OCaml: none (`Mirage_block_mem` has no allocation map)
    public func allocation(at sector: UInt64, count: UInt64) async throws(BlockError) -> [BlockExtent]? {
        try checkConnected()
        try deviceInfo.validate(sector: sector, count: count)
        guard tracksAllocation, count > 0 else { return nil }
        let perChunk = UInt64(Self.chunkSize / deviceInfo.sectorSize)
        let end = sector + count
        return state.withLock { state in
            var extents: [BlockExtent] = []
            var at = sector
            while at < end {
                let chunk = Int(at / perChunk)
                let allocated = state.allocated[chunk / 64] & (1 << UInt64(chunk % 64)) != 0
                let next = min(end, (at / perChunk + 1) * perChunk)
                if let last = extents.last, last.isHole != allocated {
                    extents[extents.count - 1].sectors += next - at
                } else {
                    extents.append(BlockExtent(sectors: next - at, isHole: !allocated, isZero: !allocated))
                }
                at = next
            }
            return extents
        }
    }

    /// OCaml: `Mirage_block_mem.disconnect`
    public func disconnect() async { state.withLock { $0.connected = false } }

    /// Sets or clears the chunk bits: a write marks every chunk it touches, an unmap clears only the chunks
    /// it covers whole.
    private func mark(sector: UInt64, count: UInt64, allocated: Bool) {
        guard tracksAllocation, count > 0 else { return }
        let perChunk = UInt64(Self.chunkSize / deviceInfo.sectorSize)
        let end = sector + count
        var first = sector / perChunk
        var last = (end - 1) / perChunk
        if !allocated {
            if sector % perChunk != 0 { first += 1 }
            // The device's last chunk may be short: covering up to the end of the device covers it whole.
            if end % perChunk != 0, end != deviceInfo.sizeSectors {
                if last == 0 { return }
                last -= 1
            }
            guard first <= last else { return }
        }
        state.withLock { state in
            for chunk in Int(first)...Int(last) {
                if allocated {
                    state.allocated[chunk / 64] |= 1 << UInt64(chunk % 64)
                } else {
                    state.allocated[chunk / 64] &= ~(1 << UInt64(chunk % 64))
                }
            }
        }
    }

    private func checkConnected() throws(BlockError) {
        guard state.withLock({ $0.connected }) else { throw .disconnected }
    }
}
