import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#endif

// The file device's allocation map (SEEK_DATA/SEEK_HOLE), zeroing (fallocate) and reads that must not wait
// (preadv2 with RWF_NOWAIT: only data already in the page cache).
extension FileBlockDevice {
    /// Reads from the page cache on the calling thread, or returns false if any of it would need the disk.
    ///
    /// OCaml: none (mirage-block-unix always reads on a worker thread)
    public func readWithoutWaiting(at sector: UInt64, into buffers: [PageBuffer]) -> Bool {
        guard let preadv2 = LinuxCalls.preadv2, buffers.count <= 64,
            (try? deviceInfo.validate(sector: sector, buffers: buffers)) != nil, let fd = try? acquire()
        else { return false }
        defer { releaseDescriptor() }
        var vectors = buffers.map { iovec(iov_base: $0.pointer, iov_len: $0.count) }
        let total = buffers.reduce(0) { $0 + $1.count }
        let offset = off_t(sector) * off_t(deviceInfo.sectorSize)
        // A short read (part of the range not cached, or interrupted) is not worth finishing here.
        let got = preadv2(fd, &vectors, Int32(vectors.count), offset, LinuxCalls.noWait)
        if got == total { return true }
        // RWF_NOWAIT also refuses cached pages that carry a readahead mark (it will not start readahead),
        // which after a sequential pass over the file is a good share of them: when cachestat says the whole
        // range is cached, a plain read cannot wait for the disk either.
        guard got < 0, errno == EAGAIN, LinuxCalls.allCached(fd, offset: UInt64(offset), length: UInt64(total))
        else { return false }
        return preadv2(fd, &vectors, Int32(vectors.count), offset, 0) == total
    }

    /// Lends the range for `sendfile` when `cachestat(2)` (Linux 6.5) says every page of it is cached; the
    /// descriptor stays open until the lease goes.
    ///
    /// OCaml: none (mirage-block has no zero-copy path)
    public func cachedFileRange(at sector: UInt64, count: UInt64) -> FileRangeLease? {
        guard count > 0, (try? deviceInfo.validate(sector: sector, count: count)) != nil, let fd = try? acquire()
        else { return nil }
        let size = UInt64(deviceInfo.sectorSize)
        let offset = sector * size
        let length = count * size
        guard length <= UInt64(Int32.max), LinuxCalls.allCached(fd, offset: offset, length: length) else {
            releaseDescriptor()
            return nil
        }
        return FileRangeLease(descriptor: fd, offset: Int64(offset), count: Int(length)) { self.releaseDescriptor() }
    }

    /// Zeroes the range with `fallocate`: punching a hole when `unmap` allows it, else `ZERO_RANGE`. Where
    /// the file system supports neither, writes zeroes, or with `fast` fails with
    /// ``BlockError/unimplemented(operation:)`` instead.
    ///
    /// OCaml: none (mirage-block-unix's `discard` punches holes the same way)
    public func writeZeroes(at sector: UInt64, count: UInt64, unmap: Bool, fast: Bool) async throws(BlockError) {
        let fd = try acquire()
        defer { releaseDescriptor() }
        guard deviceInfo.readWrite else { throw .isReadOnly }
        try deviceInfo.validate(sector: sector, count: count)
        guard count > 0 else { return }
        let start = off_t(sector) * off_t(deviceInfo.sectorSize)
        let length = off_t(count) * off_t(deviceInfo.sectorSize)
        let done = await threads.run { () -> Bool in
            guard let fallocate = LinuxCalls.fallocate else { return false }
            let modes =
                unmap
                ? [LinuxCalls.punchHole | LinuxCalls.keepSize, LinuxCalls.zeroRange | LinuxCalls.keepSize]
                : [LinuxCalls.zeroRange | LinuxCalls.keepSize]
            return modes.contains { mode in fallocate(fd, mode, start, length) == 0 }
        }
        if done { return }
        if fast { throw .unimplemented(operation: "fast zero of \(path)") }
        try await writeZeroBuffers(at: sector, count: count)
    }

    /// The file's holes and data from `lseek(SEEK_DATA / SEEK_HOLE)`, in whole sectors: a sector that
    /// holds any data is data. At most 1024 extents per call.
    ///
    /// OCaml: none (mirage-block-unix has no allocation map; `qemu-img map` reads the same `lseek` answers)
    public func allocation(at sector: UInt64, count: UInt64) async throws(BlockError) -> [BlockExtent]? {
        let fd = try acquire()
        defer { releaseDescriptor() }
        try deviceInfo.validate(sector: sector, count: count)
        guard count > 0 else { return [] }
        let sectorSize = off_t(deviceInfo.sectorSize)
        let start = off_t(sector) * sectorSize
        let end = start + off_t(count) * sectorSize
        let holes = await threads.run { () -> [(off_t, off_t)]? in Self.holes(fd: fd, from: start, to: end) }
        guard let holes else { return nil }
        var extents: [BlockExtent] = []
        func append(_ sectors: UInt64, hole: Bool) {
            guard sectors > 0 else { return }
            if let last = extents.last, last.isHole == hole {
                extents[extents.count - 1].sectors += sectors
            } else {
                extents.append(BlockExtent(sectors: sectors, isHole: hole, isZero: hole))
            }
        }
        var at = UInt64(start / sectorSize)
        for (holeStart, holeEnd) in holes {
            // Only whole sectors inside the hole are holes.
            let first = UInt64((holeStart + sectorSize - 1) / sectorSize)
            let last = UInt64(holeEnd / sectorSize)
            guard last > first else { continue }
            append(first - at, hole: false)
            append(last - first, hole: true)
            at = last
        }
        // Data up to where the scan stopped (rounded up: a partly scanned sector is data).
        let stop = UInt64(((holes.last?.1 ?? end) + sectorSize - 1) / sectorSize)
        append(max(stop, at) - at, hole: false)
        return extents
    }

    /// The holes in `[from, to)` as byte ranges, in order; the last range ends where the scan stopped
    /// (`to`, or earlier after 1024 extents). Nil when the file system cannot tell.
    private static func holes(fd: Int32, from: off_t, to: off_t) -> [(off_t, off_t)]? {
        var holes: [(off_t, off_t)] = []
        var at = from
        var extents = 0
        while at < to && extents < 1024 {
            let data = lseek(fd, at, LinuxCalls.seekData)
            if data < 0 {
                // ENXIO: no data from here to the end of the file. Anything else: no answer.
                guard errno == ENXIO else { return nil }
                holes.append((at, to))
                return holes
            }
            if data > at {
                holes.append((at, min(data, to)))
                extents += 1
            }
            guard data < to else { return holes }
            let hole = lseek(fd, data, LinuxCalls.seekHole)
            guard hole >= 0 else { return nil }
            at = hole
            extents += 1
        }
        // Mark where the scan stopped with an empty range, so the caller knows what it covered.
        holes.append((min(at, to), min(at, to)))
        return holes
    }
}

/// Linux calls and constants Swift's Glibc module hides behind `_GNU_SOURCE`: looked up once with `dlsym`
/// (C calling convention, no C target needed) and spelled as their stable Linux ABI values.
package enum LinuxCalls {
    typealias PReadV2 = @convention(c) (Int32, UnsafePointer<iovec>?, Int32, off_t, Int32) -> Int
    typealias FAllocate = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    package typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32

    /// `preadv2(2)`, if the C library has it.
    static let preadv2: PReadV2? = symbol("preadv2", as: PReadV2.self)
    /// `fallocate(2)`, if the C library has it.
    static let fallocate: FAllocate? = symbol("fallocate", as: FAllocate.self)
    /// `sync_file_range(2)`, if the C library has it.
    package static let syncFileRange: SyncFileRange? = symbol("sync_file_range", as: SyncFileRange.self)
    /// `SYNC_FILE_RANGE_WAIT_BEFORE`, `SYNC_FILE_RANGE_WRITE` and `SYNC_FILE_RANGE_WAIT_AFTER`.
    package static let syncWaitBefore: UInt32 = 1
    package static let syncWrite: UInt32 = 2
    package static let syncWaitAfter: UInt32 = 4

    /// `cachestat(2)` through `syscall(2)`, which Swift cannot call directly (it is variadic; the C library's
    /// `syscall` only moves registers, so a fixed-arity call is what it expects).
    typealias SysCall = @convention(c) (Int, Int32, UnsafeRawPointer, UnsafeMutableRawPointer, UInt32) -> Int
    static let syscall: SysCall? = symbol("syscall", as: SysCall.self)
    /// `__NR_cachestat`, the same on every architecture (the generic syscall table and x86-64 both).
    static let cachestatNumber = 451
    /// False once the kernel (or a seccomp filter) refused `cachestat`: no use asking again.
    private static let cachestatWorks = Atomic<Bool>(true)

    /// True when every page of `length` bytes from `offset` of `fd` is in the page cache.
    static func allCached(_ fd: Int32, offset: UInt64, length: UInt64) -> Bool {
        guard let syscall, cachestatWorks.load(ordering: .relaxed) else { return false }
        // struct cachestat_range { __u64 off, len; }; struct cachestat { __u64 nr_cache, nr_dirty,
        // nr_writeback, nr_evicted, nr_recently_evicted; }
        var range = (offset, length)
        var stat = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let result = withUnsafePointer(to: &range) { range in
            withUnsafeMutablePointer(to: &stat) { syscall(cachestatNumber, fd, range, $0, 0) }
        }
        if result != 0 {
            if errno == ENOSYS || errno == EPERM { cachestatWorks.store(false, ordering: .relaxed) }
            return false
        }
        let pageSize = UInt64(4096)
        let pages = (offset + length + pageSize - 1) / pageSize - offset / pageSize
        return stat.0 >= pages
    }

    /// `RWF_NOWAIT`.
    static let noWait: Int32 = 0x8
    /// `FALLOC_FL_KEEP_SIZE`.
    static let keepSize: Int32 = 0x1
    /// `FALLOC_FL_PUNCH_HOLE`.
    static let punchHole: Int32 = 0x2
    /// `FALLOC_FL_ZERO_RANGE`.
    static let zeroRange: Int32 = 0x10
    /// `SEEK_DATA`.
    static let seekData: Int32 = 3
    /// `SEEK_HOLE`.
    static let seekHole: Int32 = 4

    private static func symbol<T>(_ name: String, as type: T.Type) -> T? {
        guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, name) else { return nil }
        return unsafeBitCast(address, to: type)
    }
}
