import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Small file helpers over libc (the runner avoids Foundation to stay small in the initramfs).
enum Files {
    /// The whole contents of a (small, procfs/sysfs) file, or nil when it cannot be opened.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            result.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: result, as: UTF8.self)
    }

    /// The file's contents without surrounding whitespace.
    static func trimmed(_ path: String) -> String? {
        read(path).map { text in
            String(text.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
        }
    }

    /// The `stat` mode bits of `path`, or nil when it does not exist.
    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode
    }

    /// True when `path` is a character device.
    static func isCharacterDevice(_ path: String) -> Bool {
        guard let mode = mode(path) else { return false }
        return mode & S_IFMT == S_IFCHR
    }

    /// True when `path` is a unix socket.
    static func isSocket(_ path: String) -> Bool {
        guard let mode = mode(path) else { return false }
        return mode & S_IFMT == S_IFSOCK
    }

    /// Waits up to `milliseconds` for `fd` to become readable.
    static func waitReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, milliseconds) == 1 && entry.revents & Int16(POLLIN) != 0
    }

    /// "fd -> target" for every open descriptor of this process (from /proc/self/fd), e.g. "5 -> socket:[12]".
    static func openDescriptorTargets() -> Set<String> {
        guard let dir = opendir("/proc/self/fd") else { return [] }
        defer { closedir(dir) }
        var result: Set<String> = []
        while let entry = readdir(dir) {
            let name = String(decoding: Posix.name(of: entry), as: UTF8.self)
            guard !name.hasPrefix(".") else { continue }
            var target = [CChar](repeating: 0, count: 256)
            let count = readlink("/proc/self/fd/\(name)", &target, target.count - 1)
            guard count > 0 else { continue }
            let text = String(decoding: target[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            result.insert("\(name) -> \(text)")
        }
        return result
    }

    /// Writes `text` to an existing (sysfs) file, or with `create` to a new or truncated one (mode 0644); true
    /// when the whole write succeeded.
    @discardableResult
    static func write(_ path: String, _ text: String, create: Bool = false) -> Bool {
        let fd = create ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) : open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
    }

    /// The target of symbolic link `path`, or nil.
    static func link(_ path: String) -> String? {
        var target = [CChar](repeating: 0, count: 512)
        let count = readlink(path, &target, target.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: target[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
