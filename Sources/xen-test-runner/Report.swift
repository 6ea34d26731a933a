import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Why a check failed: a message for the console line.
struct CheckFailure: Error, CustomStringConvertible {
    /// What went wrong, with the values involved.
    let description: String
    init(_ description: String) { self.description = description }
}

/// Fails the current check with `message` unless `condition` holds.
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(CheckFailure) {
    if !condition { throw CheckFailure(message()) }
}

/// Unwraps `value` or fails the current check with `message`.
func unwrap<T>(_ value: T?, _ message: @autoclosure () -> String) throws(CheckFailure) -> T {
    guard let value else { throw CheckFailure(message()) }
    return value
}

/// `message` plus the C `errno` text, for failures of libxen* calls.
func errnoText(_ message: String) -> String {
    let code = errno
    return "\(message): errno \(code) (\(String(cString: strerror(code))))"
}

// MARK: - Report

/// Runs checks one at a time and prints one console line per check, then `N passed, N failed`.
///
/// A watchdog task ends the process with a FAIL line if one check runs longer than its limit: a check that
/// blocks inside a C library call cannot be cancelled, and the harness must still see a summary line.
/// Not in OCaml: this is the dom0 test runner's own bookkeeping.
final class Report: Sendable {
    private struct State {
        var passed = 0
        var failed = 0
        var current: String?
        var detail: String?
        var deadline: UInt64 = 0
        /// What the running check says about itself if the watchdog stops it.
        var explain: (@Sendable () -> String)?
    }
    private let state = Mutex(State())
    /// Prefix of every check name, e.g. the xenstored variant: lines stay distinguishable across boots.
    let prefix: String

    init(prefix: String) { self.prefix = prefix }

    /// Runs a synchronous check (C calls) on the calling thread.
    func check(_ name: String, limit seconds: UInt64 = 30, _ body: () throws -> Void) {
        begin(name, limit: seconds)
        do {
            try body()
            end(name, failure: nil)
        } catch {
            end(name, failure: "\(error)")
        }
    }

    /// Runs an asynchronous check (our Swift libraries).
    func check(_ name: String, limit seconds: UInt64 = 30, _ body: () async throws -> Void) async {
        begin(name, limit: seconds)
        do {
            try await body()
            end(name, failure: nil)
        } catch {
            end(name, failure: "\(error)")
        }
    }

    /// Attaches `text` to the running check's PASS/FAIL line (e.g. which way the daemon answered).
    func detail(_ text: String) {
        state.withLock { $0.detail = text }
    }

    /// Prints `text` as one console line of its own, outside any check (the bench group's table).
    func line(_ text: String) { emit(text) }

    /// Gives the watchdog words for the running check: if it expires, `explain()` (run on the watchdog's
    /// thread, so it must not wait for tasks) is quoted on the FAIL line, with every thread's state.
    func onTimeout(_ explain: @escaping @Sendable () -> String) {
        state.withLock { $0.explain = explain }
    }

    /// Prints the summary line; the process exit status is 0 only when nothing failed.
    func finish() -> Int32 {
        let (passed, failed) = state.withLock { ($0.passed, $0.failed) }
        emit("\(passed) passed, \(failed) failed")
        return failed == 0 && passed > 0 ? 0 : 1
    }

    /// Polls the running check's deadline; on expiry prints its FAIL line and the summary and exits. A plain
    /// thread, not a task: a check that wedges the cooperative pool (every worker blocked) is still reported.
    func startWatchdog() {
        let status = DetachedThread.spawn { [self] in
            while true {
                usleep(200_000)
                let expired: (String, Int, Int, (@Sendable () -> String)?)? = state.withLock { state in
                    guard let current = state.current, MonotonicClock.nanoseconds() > state.deadline else { return nil }
                    state.current = nil
                    state.failed += 1
                    return (current, state.passed, state.failed, state.explain)
                }
                if let (name, passed, failed, explain) = expired {
                    emit("XT-NOTE threads at the watchdog: \(ThreadStates.describe())")
                    emit("XT-NOTE global executor: \(ThreadStates.probeGlobalExecutor())")
                    emit("FAIL \(prefix)\(name): timed out (watchdog)\(explain.map { " [\($0())]" } ?? "")")
                    emit("\(passed) passed, \(failed) failed")
                    _exit(1)
                }
            }
        }
        if status != 0 { emit("NOTE watchdog thread not started (errno \(status)): a hung check hangs the run") }
    }

    // MARK: - Internals

    private func begin(_ name: String, limit seconds: UInt64) {
        state.withLock {
            $0.current = name
            $0.explain = nil
            $0.deadline = MonotonicClock.nanoseconds() + seconds * 1_000_000_000
        }
    }

    private func end(_ name: String, failure: String?) {
        let (counted, detail) = state.withLock { state -> (Bool, String?) in
            guard state.current == name else { return (false, nil) }  // the watchdog already reported it
            state.current = nil
            defer { state.detail = nil }
            if failure == nil { state.passed += 1 } else { state.failed += 1 }
            return (true, state.detail)
        }
        guard counted else { return }
        let suffix = detail.map { " [\($0)]" } ?? ""
        if let failure {
            emit("FAIL \(prefix)\(name): \(failure)\(suffix)")
        } else {
            emit("PASS \(prefix)\(name)\(suffix)")
        }
    }

    /// One whole line with a single write(2), so console output from other writers cannot split it.
    private func emit(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(1, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }
}
