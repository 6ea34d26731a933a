import Synchronization

/// Everything a guest printed on a console we serve, kept so the checks can wait for the guest's report
/// lines (`XT-DOMU key...`, see scripts/xen/domu-init.sh) and quote the tail when something goes wrong.
final class ConsoleTranscript: Sendable {
    private struct State {
        var bytes: [UInt8] = []
        var ended = false
    }
    private let state = Mutex(State())
    /// The marker the guest puts before each report.
    let marker: String

    init(marker: String) { self.marker = marker }

    /// Appends a chunk read from the console.
    func append(_ chunk: [UInt8]) { state.withLock { $0.bytes.append(contentsOf: chunk) } }

    /// The console closed (the stream ended).
    func end() { state.withLock { $0.ended = true } }

    /// Whether the console closed.
    var ended: Bool { state.withLock { $0.ended } }

    /// Bytes received so far.
    var count: Int { state.withLock { $0.bytes.count } }

    /// Every complete or partial line, carriage returns removed (the guest's tty adds them).
    var lines: [String] {
        let text = state.withLock { String(decoding: $0.bytes, as: UTF8.self) }
        // "\r\n" is one Character in Swift: split on every newline character, CR LF included.
        return text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map {
            String($0.filter { $0 != "\r" })
        }
    }

    /// The text after "`marker` `key`" on the first report line that has it, or nil.
    func report(_ key: String) -> String? {
        let needle = "\(marker) \(key)"
        for line in lines {
            guard let range = line.firstRange(of: needle) else { continue }
            return String(line[range.upperBound...])
        }
        return nil
    }

    /// Waits up to `seconds` for the report `key`; fails at once if the guest reported an error instead.
    func wait(for key: String, seconds: Int) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while true {
            if let value = report(key) { return value }
            if let why = report("error=") {
                throw CheckFailure("the domU reported error \"\(why)\" (waiting for \(key)); \(tail())")
            }
            if state.withLock({ $0.ended }) {
                throw CheckFailure("the console closed before the domU reported \(key); \(tail())")
            }
            if ContinuousClock.now > deadline {
                throw CheckFailure("no \"\(marker) \(key)\" within \(seconds)s; \(tail())")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The last lines, for failure messages: "domU console (N bytes): a | b | c".
    func tail(_ lineCount: Int = 30) -> String {
        // The harness watches dom0's console for "Kernel panic": a guest's panic quoted here must not read
        // as dom0's own.
        // The bulk lines say nothing a failure needs: leave them out (their own check reports them).
        let shown = lines.filter { !$0.isEmpty && !$0.contains("XT-BULK ") }.suffix(lineCount).map {
            String($0.prefix(160)).split(separator: "Kernel panic", omittingEmptySubsequences: false)
                .joined(separator: "domU kernel-panic")
        }
        return "domU console (\(count) bytes): " + shown.joined(separator: " | ")
    }
}
