#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Lists of buffers read as one byte range (scatter/gather): a block request's buffers, the granted pages
/// behind a ring request, a bounce buffer, a frame's pieces. Written once, for every front and back end.
extension PageBuffer {
    /// The pieces of the concatenation of `buffers` that cover `count` bytes from byte `start` (views, no copy;
    /// `start` ≥ 0). A range that runs past the end is cut at the end.
    ///
    /// OCaml: none (`Cstruct.sub` over a `Cstruct.t list`)
    package static func slices(of buffers: [PageBuffer], from start: Int, count: Int) -> [PageBuffer] {
        if buffers.count == 1, let only = buffers[0].checkedSlice(from: start, count: count) { return [only] }
        var result: [PageBuffer] = []
        var position = start
        var left = count
        for buffer in buffers where left > 0 {
            if position >= buffer.count {
                position -= buffer.count
                continue
            }
            let take = min(buffer.count - position, left)
            result.append(buffer.slice(from: position, count: take))
            left -= take
            position = 0
        }
        return result
    }

    /// Copies the concatenation of `sources` into the concatenation of `destinations`, from their starts, as
    /// far as the shorter of the two reaches; returns the bytes copied. Gathers into one buffer with a
    /// one-element `destinations`, scatters from one with a one-element `sources`.
    ///
    /// OCaml: none (`Cstruct.blit` piece by piece)
    @discardableResult
    package static func copy(from sources: [PageBuffer], to destinations: [PageBuffer]) -> Int {
        var (source, sourceOffset) = (0, 0)
        var (destination, destinationOffset) = (0, 0)
        var copied = 0
        while source < sources.count, destination < destinations.count {
            let from = sources[source]
            let to = destinations[destination]
            let count = min(from.count - sourceOffset, to.count - destinationOffset)
            if count > 0 {
                memmove(to.pointer + destinationOffset, from.pointer + sourceOffset, count)
                copied += count
                sourceOffset += count
                destinationOffset += count
            }
            if sourceOffset == from.count { (source, sourceOffset) = (source + 1, 0) }
            if destinationOffset == to.count { (destination, destinationOffset) = (destination + 1, 0) }
        }
        return copied
    }
}
