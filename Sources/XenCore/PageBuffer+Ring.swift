#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - Circular byte rings

extension PageBuffer {
    /// Copies `length` bytes out of this view read as a byte ring (its size a power of two) starting at the
    /// free-running index `index` (masked by the size), wrapping past the end to the start: the data half of
    /// every Xen byte ring (console, vchan). Traps unless the size is a power of two and `length` fits.
    ///
    /// OCaml: none (the rings blit in two pieces themselves: `Console_ring`, `Vchan.Endpoint._read_one`)
    public func copyOutOfRing(at index: UInt32, count length: Int, to destination: UnsafeMutableRawPointer) {
        let (start, first) = ringSplit(index, length)
        memcpy(destination, pointer + start, first)
        if length > first { memcpy(destination + first, pointer, length - first) }
    }

    /// Copies `length` bytes into this view read as a byte ring (its size a power of two) starting at the
    /// free-running index `index`, wrapping past the end to the start. Traps unless `length` fits.
    ///
    /// OCaml: none (the rings blit in two pieces themselves: `Console_ring`, `Vchan.Endpoint._write_noblock`)
    public func copyIntoRing(at index: UInt32, count length: Int, from source: UnsafeRawPointer) {
        let (start, first) = ringSplit(index, length)
        memcpy(pointer + start, source, first)
        if length > first { memcpy(pointer, source + first, length - first) }
    }

    /// Where `index` falls in the ring and how many of `length` bytes fit before the end.
    private func ringSplit(_ index: UInt32, _ length: Int) -> (start: Int, first: Int) {
        precondition(count > 0 && count & (count - 1) == 0, "a byte ring's size must be a power of two")
        precondition(length >= 0 && length <= count, "ring copy longer than the ring")
        let start = Int(index & UInt32(truncatingIfNeeded: count - 1))
        return (start, min(length, count - start))
    }
}
