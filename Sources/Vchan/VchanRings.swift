import Synchronization
public import XenCore

/// What both rings share: the page, the ring's bytes, our own index (kept here and only published, so a
/// peer scribbling on it cannot move us) and where the peer's index is read from.
struct VchanRingCursor: Sendable {
    let control: VchanControlPage
    let data: PageBuffer
    private(set) var own: UInt32
    private let ownOffset: Int
    private let peerOffset: Int
    /// Test seam: runs between the first look and the request, so a test can land the peer's move exactly
    /// in the window where it sends no event.
    var raceWindow: (@Sendable () -> Void)?

    init(control: VchanControlPage, data: PageBuffer, own ownOffset: Int, peer peerOffset: Int) {
        precondition(data.count > 0 && data.count & (data.count - 1) == 0, "ring sizes are powers of two")
        self.control = control
        self.data = data
        self.ownOffset = ownOffset
        self.peerOffset = peerOffset
        own = control.page.uint32(at: ownOffset)
    }

    /// The peer's index, one load.
    var peer: UInt32 { control.page.uint32(at: peerOffset) }

    /// Moves our index on by `count` and publishes it.
    mutating func advance(by count: Int) {
        own &+= UInt32(count)
        control.page.setUInt32(own, at: ownOffset)
    }

    /// libxenvchan's `fast_get_*`: measure; when short of `wanted`, ask the peer for `bit` and measure again
    /// (a move that landed between the two looks sent no event).
    func look(
        wanted: Int, asking bit: UInt8, _ measure: () throws(VchanError) -> Int
    ) throws(VchanError) -> Int {
        let first = try measure()
        if first >= wanted { return first }
        raceWindow?()
        control.requestNotify(bit)
        return try measure()
    }
}

/// The ring this side reads, the pure core of receiving: our consumer index is private and published; the
/// peer's producer index is read once per call and validated before any byte is copied (the XSA-155 rule).
///
/// OCaml: the read half of `Vchan.Endpoint` (`fast_get_data_ready`, `_read_one`, `read`); C: `do_recv`
public struct VchanReceiveRing: Sendable {
    var cursor: VchanRingCursor

    /// Attaches to the ring `control.role` reads, adopting the consumer index in the page, and validates
    /// the peer's producer index against it.
    ///
    /// OCaml: none (part of `Vchan.Endpoint.server`/`client`)
    public init(control: VchanControlPage, data: PageBuffer) throws(VchanError) {
        let (consumer, producer) = control.role.readIndices
        cursor = VchanRingCursor(control: control, data: data, own: consumer, peer: producer)
        _ = try available()
    }

    /// The shared page.
    public var control: VchanControlPage { cursor.control }
    /// Our consumer index (free-running).
    public var consumer: UInt32 { cursor.own }
    var raceWindow: (@Sendable () -> Void)? {
        get { cursor.raceWindow }
        set { cursor.raceWindow = newValue }
    }

    /// Bytes waiting, without touching notifications. Throws when the peer's producer index is impossible.
    ///
    /// OCaml: `rd_prod vch - rd_cons vch`; C: `raw_get_data_ready` (which returns 0 instead of failing)
    public func available() throws(VchanError) -> Int {
        let producer = cursor.peer
        let ready = producer &- cursor.own
        guard ready <= UInt32(cursor.data.count) else {
            throw .producerOutOfRange(producer: producer, consumer: cursor.own, size: cursor.data.count)
        }
        return Int(ready)
    }

    /// Bytes waiting; when fewer than `wanted`, asks the peer to signal its next write and looks again.
    ///
    /// OCaml: `Vchan.Endpoint.fast_get_data_ready`; C: `fast_get_data_ready`
    public func available(requestingNotifyBelow wanted: Int) throws(VchanError) -> Int {
        try cursor.look(wanted: wanted, asking: VchanLayout.notifyWrite) { () throws(VchanError) in try available() }
    }

    /// Copies up to `buffer.count` waiting bytes into `buffer`, publishes the consumer index and answers how
    /// many were copied and whether the peer asked for an event on reads (the caller sends it).
    ///
    /// OCaml: `Vchan.Endpoint.read` (which acknowledges only on the next call); C: `do_recv`
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(VchanError) -> (
        count: Int, notify: Bool
    ) {
        let count = min(try available(), buffer.count)
        guard count > 0, let destination = buffer.baseAddress else { return (0, false) }
        atomicMemoryFence(ordering: .acquiring)  // the producer index first, then the data it covers
        cursor.data.copyOutOfRing(at: cursor.own, count: count, to: destination)
        atomicMemoryFence(ordering: .sequentiallyConsistent)  // done reading before the slots are freed
        cursor.advance(by: count)
        return (count, cursor.control.takeNotifyRequest(VchanLayout.notifyRead))
    }
}

/// The ring this side writes, the pure core of sending: our producer index is private and published; the
/// peer's consumer index is read once per call and validated.
///
/// OCaml: the write half of `Vchan.Endpoint` (`fast_get_buffer_space`, `_write_noblock`); C: `do_send`
public struct VchanSendRing: Sendable {
    var cursor: VchanRingCursor

    /// Attaches to the ring `control.role` writes, adopting the producer index in the page, and validates
    /// the peer's consumer index against it.
    ///
    /// OCaml: none (part of `Vchan.Endpoint.server`/`client`)
    public init(control: VchanControlPage, data: PageBuffer) throws(VchanError) {
        let (consumer, producer) = control.role.writeIndices
        cursor = VchanRingCursor(control: control, data: data, own: producer, peer: consumer)
        _ = try space()
    }

    /// The shared page.
    public var control: VchanControlPage { cursor.control }
    /// Our producer index (free-running).
    public var producer: UInt32 { cursor.own }
    var raceWindow: (@Sendable () -> Void)? {
        get { cursor.raceWindow }
        set { cursor.raceWindow = newValue }
    }

    /// Free bytes, without touching notifications. Throws when the peer's consumer index is impossible.
    ///
    /// OCaml: `wr_ring_size - (wr_prod - wr_cons)`; C: `raw_get_buffer_space` (which returns 0 instead)
    public func space() throws(VchanError) -> Int {
        let consumer = cursor.peer
        let used = cursor.own &- consumer
        guard used <= UInt32(cursor.data.count) else {
            throw .consumerOutOfRange(producer: cursor.own, consumer: consumer, size: cursor.data.count)
        }
        return cursor.data.count - Int(used)
    }

    /// Free bytes; when fewer than `wanted`, asks the peer to signal its next read and looks again.
    ///
    /// OCaml: `Vchan.Endpoint.fast_get_buffer_space`; C: `fast_get_buffer_space`
    public func space(requestingNotifyBelow wanted: Int) throws(VchanError) -> Int {
        try cursor.look(wanted: wanted, asking: VchanLayout.notifyRead) { () throws(VchanError) in try space() }
    }

    /// Copies as much of `bytes` as fits, publishes the producer index and answers how many were copied and
    /// whether the peer asked for an event on writes (the caller sends it).
    ///
    /// OCaml: `Vchan.Endpoint._write_noblock`; C: `do_send`
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(VchanError) -> (count: Int, notify: Bool) {
        let count = min(try space(), bytes.count)
        guard count > 0, let source = bytes.baseAddress else { return (0, false) }
        atomicMemoryFence(ordering: .sequentiallyConsistent)  // read the indices, then write the data
        cursor.data.copyIntoRing(at: cursor.own, count: count, from: source)
        atomicMemoryFence(ordering: .releasing)  // the data before the index that covers it
        cursor.advance(by: count)
        return (count, cursor.control.takeNotifyRequest(VchanLayout.notifyWrite))
    }
}
