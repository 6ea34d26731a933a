import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A block device backed by a regular file or a block special file, read and written with pread/pwrite on
/// XenCore's `BlockingPool` (short calls: at most its width at a time). The default device BlockBack serves.
///
/// OCaml: `Block` of mirage-block-unix (`Block.connect`)
public final class FileBlockDevice: BlockDevice {
    private struct State {
        var fd: Int32
        /// Operations using `fd`: it is closed only once they are done, so a reused descriptor number can
        /// never receive a late pread/pwrite.
        var inFlight = 0
        var closing = false
    }

    /// The file's path, for error context.
    public let path: String
    /// The device's mode, sector size and size, known without a suspension point (`info()` returns the same):
    /// `deviceInfo.sizeSectors`, `deviceInfo.sizeBytes`.
    ///
    /// OCaml: `Block.get_info` (a value here, not an Lwt promise)
    public let deviceInfo: BlockDeviceInfo
    private let state: Mutex<State>
    let threads = BlockingPool.shared

    /// Opens `path`. Its size is rounded down to whole sectors; `readOnly` opens it O_RDONLY. A sector size
    /// of 1 makes the device byte-addressed (any file size, any offset): the file is read with pread, so
    /// nothing needs alignment.
    ///
    /// OCaml: `Block.connect ?prefered_sector_size`
    public init(path: String, sectorSize: Int = 512, readOnly: Bool = false) throws(BlockError) {
        guard sectorSize > 0, sectorSize.nonzeroBitCount == 1 else {
            throw .invalidRequest("sector size \(sectorSize) is not a power of two")
        }
        let fd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else { throw .io(context: "open \(path): \(String(cString: strerror(errno)))") }
        var size = lseek(fd, 0, SEEK_END)
        if size < 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .io(context: "lseek \(path): \(reason)")
        }
        size -= size % off_t(sectorSize)
        self.path = path
        self.deviceInfo = BlockDeviceInfo(
            readWrite: !readOnly, sectorSize: sectorSize, sizeSectors: UInt64(size) / UInt64(sectorSize))
        self.state = Mutex(State(fd: fd))
    }

    deinit {
        let fd = state.withLock { $0.fd }
        if fd >= 0 { close(fd) }
    }

    /// OCaml: `Block.get_info`
    public func info() async -> BlockDeviceInfo { deviceInfo }

    /// OCaml: `Block.read`
    public func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        let fd = try acquire()
        defer { releaseDescriptor() }
        _ = try deviceInfo.validate(sector: sector, buffers: buffers)
        let start = off_t(sector) * off_t(deviceInfo.sectorSize)
        let path = path
        try await threads.run { () throws(BlockError) in
            var offset = start
            for buffer in buffers {
                try Self.transfer(fd: fd, buffer: buffer, offset: offset, write: false, path: path)
                offset += off_t(buffer.count)
            }
        }
    }

    /// OCaml: `Block.write`
    public func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        let fd = try acquire()
        defer { releaseDescriptor() }
        guard deviceInfo.readWrite else { throw .isReadOnly }
        _ = try deviceInfo.validate(sector: sector, buffers: buffers)
        let start = off_t(sector) * off_t(deviceInfo.sectorSize)
        let path = path
        try await threads.run { () throws(BlockError) in
            var offset = start
            for buffer in buffers {
                try Self.transfer(fd: fd, buffer: buffer, offset: offset, write: true, path: path)
                offset += off_t(buffer.count)
            }
        }
    }

    /// fsync(2) on a pool thread.
    ///
    /// OCaml: `Block.flush`
    public func flush() async throws(BlockError) {
        let fd = try acquire()
        defer { releaseDescriptor() }
        let path = path
        try await threads.run { () throws(BlockError) in
            guard fsync(fd) == 0 else { throw .io(context: "fsync \(path): \(String(cString: strerror(errno)))") }
        }
    }

    /// Punches a hole over the range (or, where the file system cannot, writes zeroes), so discarded
    /// sectors read back as zeroes (as the in-memory device does).
    ///
    /// OCaml: `Block.discard`
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        try await writeZeroes(at: sector, count: count, unmap: true, fast: false)
    }

    /// True: ``discard(at:count:)`` punches a hole (or writes zeroes where the file system cannot).
    ///
    /// OCaml: none (mirage-block-unix's `Block.discard` is always there)
    public var supportsDiscard: Bool { true }

    /// Closes the file (once operations in progress finish); later calls fail with ``BlockError/disconnected``.
    ///
    /// OCaml: `Block.disconnect`
    public func disconnect() async {
        let fd = state.withLock { state -> Int32? in
            state.closing = true
            guard state.inFlight == 0, state.fd >= 0 else { return nil }
            defer { state.fd = -1 }
            return state.fd
        }
        if let fd { close(fd) }
    }

    func acquire() throws(BlockError) -> Int32 {
        let fd = state.withLock { state -> Int32? in
            guard !state.closing, state.fd >= 0 else { return nil }
            state.inFlight += 1
            return state.fd
        }
        guard let fd else { throw .disconnected }
        return fd
    }

    func releaseDescriptor() {
        let fd = state.withLock { state -> Int32? in
            state.inFlight -= 1
            guard state.closing, state.inFlight == 0, state.fd >= 0 else { return nil }
            defer { state.fd = -1 }
            return state.fd
        }
        if let fd { close(fd) }
    }

    /// One whole pread/pwrite, looping over short transfers and EINTR.
    static func transfer(
        fd: Int32, buffer: PageBuffer, offset: off_t, write: Bool, path: String
    ) throws(BlockError) {
        var done = 0
        while done < buffer.count {
            let n =
                write
                ? pwrite(fd, buffer.pointer + done, buffer.count - done, offset + off_t(done))
                : pread(fd, buffer.pointer + done, buffer.count - done, offset + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                let op = write ? "pwrite" : "pread"
                throw .io(context: "\(op) \(path) at \(offset + off_t(done)): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw .io(context: "\(write ? "pwrite" : "pread") \(path): end of file at \(offset)") }
            done += n
        }
    }
}
