/// SplitMix64: a tiny, fast, deterministic random number generator.
///
/// For reproducible simulations, tests and benchmarks: a few instructions per number, so a benchmark measures
/// I/O rather than random numbers, and a seeded test replays exactly. Not for anything security-related.
/// Not in OCaml (mirage tests use `Random.State`).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's whole state; the next number depends only on it.
    public var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next number of the sequence.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next `count` bytes of the sequence: each number's eight bytes, least significant first (the
    /// last number's low bytes when `count` is not a multiple of 8). A word at a time, so megabytes of test
    /// data cost little even in a debug build.
    public mutating func bytes(count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var index = 0
            while index + 8 <= count {
                raw.storeBytes(of: next().littleEndian, toByteOffset: index, as: UInt64.self)
                index += 8
            }
            if index < count {
                var word = next()
                while index < count {
                    raw[index] = UInt8(truncatingIfNeeded: word)
                    word >>= 8
                    index += 1
                }
            }
        }
        return bytes
    }
}
