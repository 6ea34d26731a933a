import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Where each thread of this process is, from `/proc/self/task`: for the watchdog's report of a hung check
/// (a wedged cooperative pool shows as workers missing or blocked in a system call).
enum ThreadStates {
    /// `tid:name:state:wchan:syscall` for every thread, space-separated (`syscall` is the number and first
    /// argument, or `running`).
    static func describe() -> String {
        guard let directory = opendir("/proc/self/task") else { return "(no /proc/self/task)" }
        defer { closedir(directory) }
        var threads: [String] = []
        while let entry = readdir(directory) {
            let tid = String(decoding: Posix.name(of: entry), as: UTF8.self)
            guard tid.first?.isNumber == true else { continue }
            let base = "/proc/self/task/\(tid)"
            // stat: "tid (comm) S ..." — the state follows the last ')'.
            let state = firstLine("\(base)/stat").split(separator: ")").last?.split(separator: " ").first ?? "?"
            let call = firstLine("\(base)/syscall").split(separator: " ").prefix(2).joined(separator: " ")
            threads.append("\(tid):\(firstLine("\(base)/comm")):\(state):\(firstLine("\(base)/wchan")):\(call)")
        }
        return threads.joined(separator: " ")
    }

    /// Whether Swift's global executor still runs work: a task started from this thread (not a pool thread)
    /// must run within 2 s. A pool that lost its workers' wake-ups runs no task, so neither an event's waiter
    /// nor a timeout's timer can make progress, and a hang there is not the check's own.
    static func probeGlobalExecutor() -> String {
        let flag = ProbeFlag()
        Task.detached { flag.ran.store(true, ordering: .releasing) }
        for tenth in 0..<20 {
            if flag.ran.load(ordering: .acquiring) { return "a new task ran within \(tenth * 100) ms" }
            usleep(100_000)
        }
        return "a new task did not run within 2 s (the cooperative pool runs nothing)"
    }

    private final class ProbeFlag: Sendable {
        let ran = Atomic<Bool>(false)
    }

    /// The first line of a small /proc file, or "?".
    private static func firstLine(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "?" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return String(decoding: buffer.prefix(max(0, count)).prefix { $0 != 10 }, as: UTF8.self)
    }
}
