import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A block device held in memory: the twin of mirage-block's `Mirage_block_mem`.
///
/// OCaml: `Mirage_block_mem.connect`
public final class MemoryBlockDevice: BlockDevice {
    private struct State {
        var connected = true
    }

    private let storage: PageBuffer
    private let deviceInfo: BlockDeviceInfo
    private let state = Mutex(State())

    /// A zero-filled device of `sizeSectors` sectors of `sectorSize` bytes.
    ///
    /// OCaml: `Mirage_block_mem.connect`
    public init(sizeSectors: UInt64, sectorSize: Int = 512, readWrite: Bool = true) {
        precondition(sectorSize > 0 && sizeSectors > 0)
        let bytes = Int(sizeSectors) * sectorSize
        self.storage = PageBuffer(pages: (bytes + xenPageSize - 1) / xenPageSize).slice(from: 0, count: bytes)
        self.deviceInfo = BlockDeviceInfo(readWrite: readWrite, sectorSize: sectorSize, sizeSectors: sizeSectors)
    }

    /// OCaml: `Mirage_block_mem.get_info`
    public func info() async -> BlockDeviceInfo { deviceInfo }

    /// OCaml: `Mirage_block_mem.read`
    public func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        try checkConnected()
        _ = try deviceInfo.validate(sector: sector, buffers: buffers)
        var offset = Int(sector) * deviceInfo.sectorSize
        for buffer in buffers {
            memmove(buffer.pointer, storage.pointer + offset, buffer.count)
            offset += buffer.count
        }
    }

    /// OCaml: `Mirage_block_mem.write`
    public func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        try checkConnected()
        guard deviceInfo.readWrite else { throw .isReadOnly }
        _ = try deviceInfo.validate(sector: sector, buffers: buffers)
        var offset = Int(sector) * deviceInfo.sectorSize
        for buffer in buffers {
            memmove(storage.pointer + offset, buffer.pointer, buffer.count)
            offset += buffer.count
        }
    }

    public func flush() async throws(BlockError) { try checkConnected() }

    /// Zeroes the discarded sectors, so a later read is deterministic.
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        try checkConnected()
        guard deviceInfo.readWrite else { throw .isReadOnly }
        try deviceInfo.validate(sector: sector, count: count)
        memset(storage.pointer + Int(sector) * deviceInfo.sectorSize, 0, Int(count) * deviceInfo.sectorSize)
    }

    /// OCaml: `Mirage_block_mem.disconnect`
    public func disconnect() async { state.withLock { $0.connected = false } }

    private func checkConnected() throws(BlockError) {
        guard state.withLock({ $0.connected }) else { throw .disconnected }
    }
}
