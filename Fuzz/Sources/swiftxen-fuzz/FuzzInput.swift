import Synchronization

/// Structured values read off the front of a fuzzer's input. Past the end every read yields zeroes, so every
/// input is valid and the fuzzer's mutations of any byte change what the target does.
struct FuzzInput {
    private let bytes: [UInt8]
    private(set) var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// True once every byte was read.
    var isEmpty: Bool { position >= bytes.count }

    /// Bytes not read yet.
    var remaining: Int { max(0, bytes.count - position) }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func uint16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }

    mutating func uint32() -> UInt32 { UInt32(uint16()) | UInt32(uint16()) << 16 }

    mutating func uint64() -> UInt64 { UInt64(uint32()) | UInt64(uint32()) << 32 }

    /// A number in `range` (small ranges: one byte).
    mutating func int(in range: ClosedRange<Int>) -> Int {
        let span = range.upperBound - range.lowerBound + 1
        let raw = span <= 256 ? Int(byte()) : Int(uint16())
        return range.lowerBound + raw % span
    }

    /// Up to `count` bytes (fewer at the end).
    mutating func bytes(_ count: Int) -> [UInt8] {
        let take = min(max(0, count), remaining)
        defer { position += take }
        return Array(bytes[position..<(position + take)])
    }

    /// A length-prefixed byte string (one length byte).
    mutating func blob() -> [UInt8] { bytes(Int(byte())) }

    /// Everything not read yet.
    mutating func rest() -> [UInt8] { bytes(remaining) }
}

/// Stops the run with a clear message when an invariant does not hold: libFuzzer reports the trap as a crash
/// and saves the input.
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant violated: \(message())") }
}

/// A mutex on the heap, for state that escaping closures share.
final class Locked<Value: Sendable>: Sendable {
    let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
}
