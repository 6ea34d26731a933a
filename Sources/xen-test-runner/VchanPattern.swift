import Vchan
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The bytes the vchan checks send: a pseudo-random block of a prime length (so no power-of-two ring can
/// line a repeat up with itself) repeated forever, kept twice over so any window of up to one period is
/// contiguous. Sender and receiver derive it from the same seed; the receiver compares every byte.
struct VchanPattern: Sendable {
    static let period = 1_000_003
    let seed: UInt64
    let bytes: PageBuffer

    init(seed: UInt64) {
        self.seed = seed
        bytes = PageBuffer(pages: (2 * Self.period + xenPageSize - 1) / xenPageSize)
        var generator = SplitMix64(seed: seed)
        bytes.withUnsafeMutableBytes { raw in
            for index in stride(from: 0, to: Self.period, by: 8) {
                let word = generator.next()
                for byte in 0..<min(8, Self.period - index) {
                    raw[index + byte] = UInt8(truncatingIfNeeded: word >> UInt64(8 * byte))
                }
            }
            memcpy(raw.baseAddress! + Self.period, raw.baseAddress!, Self.period)
        }
    }

    /// The `count` bytes (at most one period) at stream offset `offset`.
    func window(at offset: Int, count: Int) -> PageBuffer {
        bytes.slice(from: offset % Self.period, count: count)
    }

    /// Whether `data` is what the stream holds at `offset`.
    func matches(_ data: UnsafeRawPointer, count: Int, at offset: Int) -> Bool {
        memcmp(data, bytes.pointer + offset % Self.period, count) == 0
    }
}

/// Streams `send` bytes of `outgoing` and receives `receive` bytes checked against `incoming` at the same
/// time over `connection`; returns the seconds it took. A mismatch or an early end is a check failure.
func exchange(
    _ connection: VchanConnection, send: Int, outgoing: VchanPattern, receive: Int, incoming: VchanPattern,
    chunk: Int = 65536
) async throws -> Double {
    let start = MonotonicClock.seconds()
    async let sent: Void = {
        var offset = 0
        while offset < send {
            let count = min(chunk, send - offset)
            try await connection.write(outgoing.window(at: offset, count: count))
            offset += count
        }
    }()
    let buffer = PageBuffer(pages: (chunk + xenPageSize - 1) / xenPageSize)
    var received = 0
    while received < receive {
        let got = try await connection.read(into: buffer.slice(from: 0, count: min(chunk, receive - received)))
        guard incoming.matches(buffer.pointer, count: got, at: received) else {
            throw CheckFailure("byte mismatch in the \(got) bytes received at offset \(received)")
        }
        received += got
    }
    try await sent
    return MonotonicClock.seconds() - start
}
