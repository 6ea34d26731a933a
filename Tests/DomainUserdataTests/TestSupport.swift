import DomainUserdata
import Foundation
import Glibc
import XenCore

/// A fresh directory under /tmp, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/swiftxen-userdata-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(created != nil, "mkdtemp failed: \(errno)")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// The names in the directory, sorted.
    func names() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }

    func file(_ name: String) -> String { path + "/" + name }
}

let uuidA = DomainUUID("6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516")!
let uuidB = DomainUUID("00112233-4455-6677-8899-aabbccddeeff")!

/// Writes `bytes` to `path` with plain POSIX calls, as libxl's `libxl__userdata_store` does
/// (open O_RDWR|O_CREAT|O_TRUNC 0600, write, close).
func writeLikeLibxl(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "open \(path): \(errno)")
    var offset = 0
    while offset < bytes.count {
        let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
        precondition(count > 0, "write: \(errno)")
        offset += count
    }
    close(fd)
}

func readFile(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { Array($0) }
}

/// Runs blocking work on a Dispatch thread so tests never block the cooperative pool.
func blocking<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: work()) }
    }
}

// MARK: - Child processes

/// The `swiftxen` executable built next to the test bundle (`swift build --build-tests` puts both in
/// `.build/<triple>/debug`).
func swiftxenExecutable() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // On some layouts the bundle binary sits inside `X.xctest/`; walk up until `swiftxen` appears.
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("swiftxen").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("swiftxen").path
}

/// A spawned child with stdin read from `stdinPath` (or /dev/null) and stdout/stderr to /dev/null or a file.
struct Child {
    let pid: pid_t

    static func spawn(_ arguments: [String], stdin stdinPath: String = "/dev/null", stdout: String = "/dev/null")
        -> Child
    {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdinPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        Posix.closeOtherDescriptors(&actions)
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
        precondition(rc == 0, "posix_spawn \(arguments[0]) failed: \(rc)")
        return Child(pid: pid)
    }

    /// Waits for the child; returns its exit status, or 128 + signal when a signal ended it.
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// True while the child has not exited (does not reap it).
    func isRunning() -> Bool {
        var info = siginfo_t()
        let rc = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
        return rc == 0 && info._sifields._sigchld.si_pid == 0
    }

    func kill() { _ = Glibc.kill(pid, SIGKILL) }
}
