/// The frames a device receives, as an async sequence: the `listen` of Mirage_net as a loop.
///
/// Several iterators may read one device; each frame goes to one of them. The sequence ends when the device
/// disconnects (after the frames already received), and an iterator's `next()` returns nil when its task is
/// cancelled. Frames shorter than the header size asked for are counted (`rxDropped`) and skipped.
/// OCaml: `Mirage_net.S.listen t ~header_size callback` (the callback is the loop body)
public struct NetworkFrames: AsyncSequence, Sendable {
    /// Each element is one frame.
    public typealias Element = NetworkFrame

    let queue: FrameQueue
    let headerSize: Int
    let counters: NetworkCounters

    /// The frames of `queue`, skipping (and counting in `counters`) those shorter than `headerSize`.
    ///
    /// OCaml: none (constructed by each device's `listen`)
    public init(queue: FrameQueue, headerSize: Int, counters: NetworkCounters) {
        self.queue = queue
        self.headerSize = headerSize
        self.counters = counters
    }

    /// The iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let queue: FrameQueue
        let headerSize: Int
        let counters: NetworkCounters

        /// The next frame long enough, or nil at the end.
        public mutating func next() async -> NetworkFrame? {
            while let frame = await queue.next() {
                if frame.data.count >= headerSize { return frame }
                counters.count(\.rxDropped)
            }
            return nil
        }
    }

    /// An iterator over the device's frames.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(queue: queue, headerSize: headerSize, counters: counters)
    }
}
