import ArgumentParser
import BlockDevice
import Foundation
import NBDClient
import NBDProtocol
import XenCore

/// One side of `swiftxen nbd copy`: an NBD export, a file or block device, `null:` (discards what it is
/// given), or a stream (`-` for stdin/stdout, a pipe or a character device) that is read or written in
/// order only.
enum CopyEndpoint: Sendable {
    case nbd(NBDClient)
    /// A file or block device; `descriptor` is a second descriptor of it for writes made on the spot.
    case device(FileBlockDevice, zeroed: Bool, descriptor: Int32)
    case null
    case stream(Int32)

    /// Opens `text` as a source.
    static func source(_ text: String, options: NBDClientOptions) async throws -> CopyEndpoint {
        if text.contains("://") { return .nbd(try await NBDClient.connect(uri: text, options: options)) }
        if text == "-" { return .stream(0) }
        if text == "null:" { throw ValidationError("null: can only be a destination") }
        let fd = open(text, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CopyError("cannot open \(text): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        if try Self.isStream(fd) { return .stream(dup(fd)) }
        return .device(try FileBlockDevice(path: text, sectorSize: 1, readOnly: true), zeroed: false, descriptor: -1)
    }

    /// Opens `text` as a destination for `size` bytes (nil: a stream source of unknown size). A regular file
    /// is created or grown to `size` (never shrunk), or with no size written in order as it comes; character
    /// devices and pipes are written in order and never grown.
    static func destination(_ text: String, size: UInt64?, options: NBDClientOptions) async throws -> CopyEndpoint {
        if text.contains("://") { return .nbd(try await NBDClient.connect(uri: text, options: options)) }
        if text == "null:" { return .null }
        if text == "-" { return .stream(1) }
        let existed = FileManager.default.fileExists(atPath: text)
        let fd = open(text, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CopyError("cannot open \(text): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        if try Self.isStream(fd) { return .stream(dup(fd)) }
        var status = stat()
        fstat(fd, &status)
        var zeroed = false
        if status.st_mode & S_IFMT == S_IFREG {
            // A stream of unknown size (stdin) is written in order from the start, the file growing as it
            // comes: a file device has a fixed size.
            guard let size else { return .stream(dup(fd)) }
            // A new or empty file reads as zeroes: holes of the source need no writes.
            zeroed = !existed || status.st_size == 0
            if UInt64(status.st_size) < size, ftruncate(fd, off_t(size)) != 0 {
                throw CopyError("cannot grow \(text) to \(size) bytes: \(String(cString: strerror(errno)))")
            }
        }
        return .device(try FileBlockDevice(path: text, sectorSize: 1), zeroed: zeroed, descriptor: dup(fd))
    }

    private static func isStream(_ fd: Int32) throws -> Bool {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw CopyError("fstat: \(String(cString: strerror(errno)))") }
        let kind = status.st_mode & S_IFMT
        return kind == S_IFCHR || kind == S_IFIFO || kind == S_IFSOCK
    }

    /// Size in bytes; nil for streams and `null:` (no size to respect).
    var size: UInt64? {
        get async {
            switch self {
            case .nbd(let client): client.size
            case .device(let device, _, _): await device.info().sizeBytes
            case .null, .stream: nil
            }
        }
    }

    /// True when it can be read or written at any offset.
    var isRandomAccess: Bool {
        if case .stream = self { return false }
        return true
    }

    /// True when ranges not written read as zeroes (a fresh file, `null:`): holes can be skipped.
    var startsZeroed: Bool {
        switch self {
        case .device(_, let zeroed, _): zeroed
        case .null: true
        case .nbd, .stream: false
        }
    }

    /// The executor a worker should prefer: the I/O thread of connection `index` of an NBD side.
    func executor(_ index: Int) -> (any TaskExecutor)? {
        if case .nbd(let client) = self { return client.taskExecutor(connection: index) }
        return nil
    }

    /// Connections of an NBD side (1 otherwise).
    var connections: Int {
        if case .nbd(let client) = self { return client.connectionCount }
        return 1
    }

    /// Fills `buffer` from `offset`; for a stream, the next bytes (returns how many: fewer only at its end).
    func read(_ buffer: PageBuffer, at offset: UInt64) async throws -> Int {
        switch self {
        case .nbd(let client): try await client.read(at: offset, into: [buffer])
        case .device(let device, _, _):
            // Data in the page cache is copied on the spot, without a hop to the blocking-I/O threads.
            if !device.readWithoutWaiting(at: offset, into: [buffer]) {
                try await device.read(at: offset, into: [buffer])
            }
        case .null: throw CopyError("null: cannot be read")
        case .stream(let fd): return try await Self.transfer(fd, buffer, write: false)
        }
        return buffer.count
    }

    /// True when data can go from this source to `output` through a ``SplicePipe``: both NBD on plain
    /// connections, or NBD to `null:`.
    func splices(to output: CopyEndpoint) -> Bool {
        guard case .nbd(let client) = self, client.splicesData else { return false }
        switch output {
        case .nbd(let destination): return destination.splicesData
        case .null: return true
        case .device, .stream: return false
        }
    }

    /// Reads `length` bytes at `offset` into the empty `pipe` (an NBD source). False when the server
    /// answered out of order, which a pipe cannot take: the pipe is emptied, read through a buffer instead.
    func read(at offset: UInt64, length: Int, into pipe: SplicePipe) async throws -> Bool {
        guard case .nbd(let client) = self else { return false }
        do {
            try await client.read(at: offset, length: length, into: pipe)
        } catch {
            pipe.discard()
            if case .unsupported = error { return false }
            throw error
        }
        return true
    }

    /// Writes the `length` bytes `pipe` holds at `offset` (an NBD destination; `null:` drops them).
    func write(at offset: UInt64, length: Int, from pipe: SplicePipe) async throws {
        switch self {
        case .nbd(let client): try await client.write(at: offset, length: length, from: pipe)
        case .null: pipe.discard(length)
        case .device, .stream: throw CopyError("a pipe goes to NBD or null: only")
        }
    }

    /// Writes `buffer` at `offset` (a stream: next). With `onThisThread`, a file is written right here,
    /// as each nbdcopy worker writes on its own thread: the caller is an NBD connection's I/O thread, never
    /// the cooperative pool, and a write into the page cache costs less than a hop to another thread and back.
    /// A file source's range as a lease for a zero-copy send, when it is all in the page cache.
    func cachedRange(at offset: UInt64, length: UInt64) -> FileRangeLease? {
        if case .device(let device, _, _) = self { return device.cachedFileRange(at: offset, count: length) }
        return nil
    }

    /// An NBD destination, which sends leased file ranges with `sendfile`.
    var sendsFiles: Bool {
        if case .nbd = self { return true }
        return false
    }

    /// Writes a leased file range: with `sendfile` to an NBD destination, else read into pages first.
    func write(_ file: FileRangeLease, at offset: UInt64) async throws {
        if case .nbd(let client) = self { return try await client.write(at: offset, fromFile: file) }
        guard let pages = file.readIntoPages() else { throw CopyError("cannot read the source at \(offset)") }
        try await write(pages, at: offset)
    }

    func write(_ buffer: PageBuffer, at offset: UInt64, onThisThread: Bool = false) async throws {
        switch self {
        case .nbd(let client): try await client.write(at: offset, from: [buffer])
        case .device(_, _, let fd) where onThisThread && fd >= 0:
            var done = 0
            while done < buffer.count {
                let count = pwrite(fd, buffer.pointer + done, buffer.count - done, off_t(offset) + off_t(done))
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { throw CopyError("write failed: \(String(cString: strerror(errno)))") }
                done += count
            }
        case .device(let device, _, _): try await device.write(at: offset, from: [buffer])
        case .null: break
        case .stream(let fd): _ = try await Self.transfer(fd, buffer, write: true)
        }
    }

    /// After a data write of `range` to a file or block device, as nbdcopy does: the range
    /// is handed to writeback at once, and `previous` (the range the same worker wrote before) is waited for
    /// and dropped from the page cache. So a copy holds about one range per worker in memory instead of the
    /// whole image dirty (which the kernel's dirty limits throttle anyway on large copies), pushes out
    /// nothing else that is cached, and reuses the pages it just freed rather than fresh ones (on a VM
    /// with free page reporting, fresh pages cost the host a fault each). Blocking: call it on a thread
    /// that may wait for the disk (`onThisThread`), else it runs on the blocking-I/O threads.
    func writeBehind(
        _ range: (offset: UInt64, length: Int)?, previous: (offset: UInt64, length: Int)?, onThisThread: Bool
    ) async {
        guard case .device(_, _, let fd) = self, fd >= 0, let sync = LinuxCalls.syncFileRange else { return }
        let settle = { @Sendable in
            if let range, range.length > 0 {
                _ = sync(fd, Int64(range.offset), Int64(range.length), LinuxCalls.syncWrite)
            }
            guard let previous, previous.length > 0 else { return }
            let waitAndWrite = LinuxCalls.syncWaitBefore | LinuxCalls.syncWrite | LinuxCalls.syncWaitAfter
            _ = sync(fd, Int64(previous.offset), Int64(previous.length), waitAndWrite)
            _ = posix_fadvise(fd, off_t(previous.offset), off_t(previous.length), POSIX_FADV_DONTNEED)
        }
        if onThisThread { settle() } else { await BlockingPool.shared.run(settle) }
    }

    /// Makes `length` bytes at `offset` read as zeroes (holes where the destination can make them).
    func zero(at offset: UInt64, length: UInt64, scratch: PageBuffer) async throws {
        switch self {
        case .nbd(let client) where client.flags.contains(.sendWriteZeroes):
            try await client.writeZeroes(at: offset, length: length)
        case .device(let device, let zeroed, _):
            if !zeroed { try await device.writeZeroes(at: offset, count: length, unmap: true, fast: false) }
        case .null: break
        case .nbd, .stream:
            // No way to zero but writing zeroes.
            scratch.fill(0)
            var at = offset
            while at < offset + length {
                let piece = scratch.slice(from: 0, count: Int(min(UInt64(scratch.count), offset + length - at)))
                try await write(piece, at: at)
                at += UInt64(piece.count)
            }
        }
    }

    /// The source's data and zero ranges from `offset`, as (length, isZero) runs covering up to `length`
    /// bytes (fewer at the end of what the source describes in one go). Nil when it cannot tell.
    func extents(at offset: UInt64, length: UInt64) async throws -> [(length: UInt64, zero: Bool)]? {
        switch self {
        case .nbd(let client):
            guard client.session.metaContexts["base:allocation"] != nil else { return nil }
            return try await client.blockStatus(at: offset, length: length).map {
                ($0.length, NBDAllocationFlags(rawValue: $0.flags).contains(.zero))
            }
        case .device(let device, _, _):
            return try await device.allocation(at: offset, count: length)?.map { ($0.sectors, $0.isZero) }
        case .null, .stream:
            return nil
        }
    }

    /// Makes what was written durable (`--flush`).
    func flush() async throws {
        switch self {
        case .nbd(let client): try await client.flush()
        case .device(let device, _, _): try await device.flush()
        case .null: break
        case .stream(let fd): _ = await BlockingPool.shared.run { fsync(fd) }
        }
    }

    func close() async {
        switch self {
        case .nbd(let client): await client.disconnect()
        case .device(let device, _, let fd):
            await device.disconnect()
            if fd >= 0 { Glibc.close(fd) }
        case .null: break
        case .stream(let fd): if fd > 2 { Glibc.close(fd) }
        }
    }

    /// A whole blocking read or write of a stream on the blocking-I/O threads; a read stops early only at
    /// the end of the stream.
    private static func transfer(_ fd: Int32, _ buffer: PageBuffer, write: Bool) async throws -> Int {
        let done = await BlockingPool.shared.run { () -> Int in
            var done = 0
            while done < buffer.count {
                let count =
                    write
                    ? Glibc.write(fd, buffer.pointer + done, buffer.count - done)
                    : Glibc.read(fd, buffer.pointer + done, buffer.count - done)
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { return count < 0 ? -Int(errno) : done }
                done += count
            }
            return done
        }
        if done < 0 {
            throw CopyError("\(write ? "write" : "read") failed: \(String(cString: strerror(Int32(-done))))")
        }
        if write && done < buffer.count { throw CopyError("short write to a stream") }
        return done
    }
}

/// A copy that failed while running (an endpoint that cannot be opened, grown, read or written; a destination
/// too small): the message and exit status 1, as nbdcopy, without the usage text ArgumentParser prints for a
/// `ValidationError`.
struct CopyError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
