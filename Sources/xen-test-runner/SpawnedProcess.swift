import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A child that keeps running while a check talks to it (a C vchan peer, `vchan-socket-proxy`): its stdin
/// and stdout are pipes held here, its stderr goes to a file quoted on failure, and it is stopped by PID.
/// Blocking pipe I/O runs on threads of its own.
final class SpawnedProcess: Sendable {
    let pid: pid_t
    let name: String
    /// The read end of its stdout.
    let output: Int32
    private let input: Mutex<Int32>
    private let status = Mutex<Int32?>(nil)
    private let errorLog: String

    /// Starts `argv` (argv[0] an absolute path).
    init(_ argv: [String], name: String) throws(CheckFailure) {
        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0 else { throw CheckFailure(errnoText("pipe")) }
        for fd in stdinPipe + stdoutPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        errorLog = "/tmp/\(name).stderr"
        let errorFD = open(errorLog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard errorFD >= 0 else { throw CheckFailure(errnoText("open \(errorLog)")) }
        let launched = ChildProcess.launch(argv, stdin: stdinPipe[0], stdout: stdoutPipe[1], stderr: errorFD)
        for fd in [stdinPipe[0], stdoutPipe[1], errorFD] { close(fd) }
        switch launched {
        case .success(let pid): self.pid = pid
        case .failure(let failure):
            for fd in [stdinPipe[1], stdoutPipe[0]] { close(fd) }
            throw failure
        }
        self.name = name
        self.output = stdoutPipe[0]
        self.input = Mutex(stdinPipe[1])
        signal(SIGPIPE, SIG_IGN)  // a dead child's stdin must fail our write, not kill the runner
    }

    deinit {
        if status.withLock({ $0 }) == nil {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            waitpid(pid, &raw, 0)
        }
        closeInput()
        close(output)
    }

    /// Its stdin, or -1 once closed.
    var inputDescriptor: Int32 { input.withLock { $0 } }

    /// Closes its stdin (end of input for it).
    func closeInput() {
        let fd = input.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        if fd >= 0 { close(fd) }
    }

    /// Sends `signal` (SIGKILL: what an OOM kill or a crash looks like to the peer).
    func send(_ signal: Int32) { kill(pid, signal) }

    /// Waits at most `seconds` for it to exit and returns its status (128 + signal when killed); kills it
    /// and returns nil when it is still running then.
    func wait(seconds: Double) async -> Int32? {
        let deadline = MonotonicClock.seconds() + seconds
        while true {
            if let done = reap(blocking: false) { return done }
            if MonotonicClock.seconds() > deadline {
                kill(pid, SIGKILL)
                _ = reap(blocking: true)
                return nil
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    private func reap(blocking: Bool) -> Int32? {
        if let done = status.withLock({ $0 }) { return done }
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, blocking ? 0 : WNOHANG)
        guard result == pid else { return nil }
        let low = raw & 0x7F
        let code = low == 0 ? (raw >> 8) & 0xFF : 128 + low
        status.withLock { $0 = code }
        return code
    }

    /// One line of its stdout (without the newline), at most `seconds` away.
    func readLine(seconds: Int) async throws -> String {
        let fd = output
        let name = self.name
        return try await within(seconds, "a line from \(name)") {
            let line = await blocking { () -> String? in
                var bytes: [UInt8] = []
                var byte: UInt8 = 0
                while read(fd, &byte, 1) == 1 {
                    if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
                    bytes.append(byte)
                }
                return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
            }
            guard let line else { throw CheckFailure("\(name) closed its output") }
            return line
        }
    }

    /// The last lines it wrote to stderr, for failure messages.
    var errorTail: String {
        let fd = open(errorLog, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            bytes += chunk.prefix(count)
        }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        return lines.suffix(5).joined(separator: " | ")
    }
}
