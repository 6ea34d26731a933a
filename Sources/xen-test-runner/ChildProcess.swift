import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What a finished child process left: its exit status (128 + signal when killed) and its merged
/// stdout/stderr.
struct ChildResult: Sendable, CustomStringConvertible {
    var status: Int32
    var output: String
    var timedOut: Bool

    var description: String {
        let text = output.split(separator: "\n").suffix(8).joined(separator: " | ")
        return "exit \(status)\(timedOut ? " (killed: timed out)" : ""): \(text)"
    }
}

/// Runs dom0 tools (xl, md5sum, rmmod) for the checks that drive the real toolstack: posix_spawn, output
/// through a pipe, a hard time limit enforced with SIGKILL by PID. The wait happens on a thread of its own.
enum ChildProcess {
    /// Runs `argv` (argv[0] an absolute path) and waits at most `seconds` for it.
    static func run(_ argv: [String], seconds: Int) async throws -> ChildResult {
        let result = await blocking { spawnAndWait(argv, seconds: seconds) }
        switch result {
        case .success(let value): return value
        case .failure(let failure): throw failure
        }
    }

    /// Runs `argv` and fails the check unless it exits 0; returns its output.
    @discardableResult
    static func checked(_ argv: [String], seconds: Int) async throws -> String {
        let result = try await run(argv, seconds: seconds)
        try require(result.status == 0 && !result.timedOut, "\(argv.joined(separator: " ")): \(result)")
        return result.output
    }

    private static func spawnAndWait(_ argv: [String], seconds: Int) -> Result<ChildResult, CheckFailure> {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return .failure(CheckFailure(errnoText("pipe"))) }
        // Close-on-exec: the child gets only the dup2'ed copies (other threads may spawn too).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let launched = launch(argv, stdin: nil, stdout: fds[1], stderr: fds[1])
        close(fds[1])
        let pid: pid_t
        switch launched {
        case .success(let started): pid = started
        case .failure(let failure):
            close(fds[0])
            return .failure(failure)
        }
        defer { close(fds[0]) }

        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var timedOut = false
        let deadline = MonotonicClock.seconds() + Double(seconds)
        // Read until EOF (every writer gone) or the deadline; then reap.
        while true {
            let left = deadline - MonotonicClock.seconds()
            if left <= 0 {
                timedOut = true
                kill(pid, SIGKILL)
                break
            }
            var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(left, 1) * 1000))
            if ready < 0, errno == EINTR { continue }
            if ready <= 0 { continue }
            let count = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            output.append(contentsOf: chunk[0..<count])
        }
        // A child that closed its output but keeps running (a daemonising tool) is waited for until the
        // deadline too.
        var status: Int32 = 0
        while true {
            let reaped = waitpid(pid, &status, timedOut ? 0 : WNOHANG)
            if reaped == pid || (reaped < 0 && errno != EINTR) { break }
            if MonotonicClock.seconds() > deadline {
                timedOut = true
                kill(pid, SIGKILL)
                continue
            }
            usleep(50_000)
        }
        let low = status & 0x7F
        let exitStatus = low == 0 ? (status >> 8) & 0xFF : 128 + low
        return .success(
            ChildResult(status: exitStatus, output: String(decoding: output, as: UTF8.self), timedOut: timedOut))
    }

    /// Starts `argv` with `stdin` (or /dev/null), `stdout` and `stderr` as its descriptors 0, 1, 2.
    static func launch(_ argv: [String], stdin: Int32?, stdout: Int32, stderr: Int32) -> Result<pid_t, CheckFailure> {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        // Only 0-2: never our pty master, gntdev/gntalloc/evtchn handles or sockets.
        Posix.closeOtherDescriptors(&actions)
        // The spawning thread is a Dispatch/Swift worker with signals blocked, and the mask (and ignored
        // dispositions) would pass to the child: xl's libxl reaps its own children on SIGCHLD and would
        // wait forever. The child gets an empty mask and default dispositions.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArgs { free(pointer) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, environ)
        guard rc == 0 else { return .failure(CheckFailure("posix_spawn \(argv[0]): \(String(cString: strerror(rc)))")) }
        return .success(pid)
    }
}
