import Glibc
import XenCore

/// The few POSIX file operations the store needs, each retrying EINTR and mapping failures to
/// `UserdataError.io` with the op and path. Blocking; callers keep them off the cooperative pool.
///
/// libxl: `libxl_write_exactly`, `libxl_read_file_contents`, plain `open`/`rename`/`unlink`.
enum PosixFile {
    /// Writes in chunks of this size, so a large value takes several `write` calls (the crash test relies on
    /// being able to interrupt between them, and the kernel copies no faster in one call).
    static let chunkSize = 64 * 1024

    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0, op: String) throws(UserdataError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw .io(op: op, path: path, errno: errno) }
        }
    }

    /// Writes every byte, looping over short writes.
    ///
    /// libxl: `libxl_write_exactly`.
    static func writeAll(_ fd: Int32, _ data: [UInt8], path: String) throws(UserdataError) {
        var offset = 0
        while offset < data.count {
            let length = min(chunkSize, data.count - offset)
            let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, length) }
            if written < 0 {
                if errno == EINTR { continue }
                throw .io(op: "write", path: path, errno: errno)
            }
            if written == 0 { throw .io(op: "write", path: path, errno: EIO) }
            offset += written
        }
    }

    /// Reads `path` to its end; nil when it does not exist.
    ///
    /// libxl: `libxl_read_file_contents` (ENOENT reported to the caller, who turns it into "no data").
    static func readAll(_ path: String) throws(UserdataError) -> [UInt8]? {
        let fd: Int32
        do {
            fd = try open(path, O_RDONLY, op: "open")
        } catch {
            if case .io(_, _, ENOENT) = error { return nil }
            throw error
        }
        defer { _ = Glibc.close(fd) }
        var status = stat()
        var capacity = 64 * 1024
        if fstat(fd, &status) == 0, status.st_size > 0, status.st_size < Int.max / 2 {
            capacity = Int(status.st_size) + 1
        }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: max(capacity, 4096))
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .io(op: "read", path: path, errno: errno)
            }
            if count == 0 { return result }
            result.append(contentsOf: buffer[0..<count])
        }
    }

    static func fsync(_ fd: Int32, path: String) throws(UserdataError) {
        while Glibc.fsync(fd) != 0 {
            if errno != EINTR { throw .io(op: "fsync", path: path, errno: errno) }
        }
    }

    /// Flushes a directory so a rename or unlink inside it survives a power cut.
    ///
    /// libxl: not in libxl (it relies on rename's atomicity only); added for crash safety.
    static func fsyncDirectory(_ path: String) throws(UserdataError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY, op: "open directory")
        defer { _ = Glibc.close(fd) }
        try fsync(fd, path: path)
    }

    static func close(_ fd: Int32, path: String) throws(UserdataError) {
        // Linux closes the descriptor even when close reports EINTR, so never retry.
        if Glibc.close(fd) != 0, errno != EINTR { throw .io(op: "close", path: path, errno: errno) }
    }

    static func rename(_ from: String, _ to: String) throws(UserdataError) {
        if Glibc.rename(from, to) != 0 { throw .io(op: "rename", path: from, errno: errno) }
    }

    /// Unlinks `path`, returning the errno on failure (libxl's `userdata_delete` returns raw errno too).
    static func unlink(_ path: String) -> Int32 {
        Glibc.unlink(path) == 0 ? 0 : errno
    }

    /// The names in a directory (no `.`/`..`), as raw bytes.
    static func listDirectory(_ path: String) throws(UserdataError) -> [[UInt8]] {
        guard let dir = opendir(path) else { throw .io(op: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw .io(op: "readdir", path: path, errno: errno) }
                return names
            }
            let name = Posix.name(of: entry)
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            names.append(name)
        }
    }
}
