import Synchronization
public import XenCore

// MARK: - Layout

/// The byte layout of `struct xencons_interface` (xen/include/public/io/console.h), one shared 4 KiB page.
///
/// `in` carries bytes from the backend to the guest (keyboard), `out` from the guest to the backend
/// (what the guest prints). Indices are free-running `UInt32`s masked by the ring size. The `connection`
/// byte was added in Xen 4.21; on older guests it lies in the page's unused tail, so writing it is harmless.
/// ConsoleTests compare every offset here with the C header through CXen.
///
/// OCaml: `Console_ring.Ring` (shared-memory-ring `lib/console_ring.ml`)
public enum ConsoleRingLayout {
    /// Offset of `in[1024]` (backend → guest).
    public static let inOffset = 0
    /// Size of `in`.
    public static let inSize = 1024
    /// Offset of `out[2048]` (guest → backend).
    public static let outOffset = 1024
    /// Size of `out`.
    public static let outSize = 2048
    /// Offset of `in_cons` (written by the guest).
    public static let inConsOffset = 3072
    /// Offset of `in_prod` (written by the backend).
    public static let inProdOffset = 3076
    /// Offset of `out_cons` (written by the backend).
    public static let outConsOffset = 3080
    /// Offset of `out_prod` (written by the guest).
    public static let outProdOffset = 3084
    /// Offset of the `connection` byte (Xen 4.21+): `XENCONSOLE_CONNECTED` 0, `XENCONSOLE_DISCONNECTED` 1.
    public static let connectionOffset = 3088
    /// Bytes of the page the interface needs (including the connection byte).
    public static let minimumPageSize = 3089
    /// `XENCONSOLE_CONNECTED`: the backend services the ring.
    public static let connected: UInt8 = 0
    /// `XENCONSOLE_DISCONNECTED`: nobody empties the ring yet (the value toolstacks write at domain build).
    public static let disconnected: UInt8 = 1
}

// MARK: - Sides and errors

/// Which end of the console ring this code plays.
///
/// OCaml: `Console_ring.Ring.Front` / `Console_ring.Ring.Back`
public enum ConsoleRingSide: Sendable, Hashable {
    /// The guest: reads `in`, writes `out`.
    case frontend
    /// The console daemon: reads `out`, writes `in`.
    case backend
}

/// One of the two byte rings in the page.
public enum ConsoleRingDirection: String, Sendable, Hashable {
    /// `in`: backend → guest.
    case input = "in"
    /// `out`: guest → backend.
    case output = "out"
}

/// A console ring whose shared indices the other side made impossible. The ring is unusable afterwards:
/// the caller disconnects that console (other consoles are unaffected).
///
/// OCaml: none (`Console_ring` trusts the indices and reads past the ring); xenconsoled masks silently.
public enum ConsoleRingError: Error, Sendable, Hashable {
    /// The peer's producer index is more than a ring ahead of our consumer index (or behind it).
    case producerOutOfRange(ring: ConsoleRingDirection, producer: UInt32, consumer: UInt32, size: Int)
    /// The peer's consumer index is ahead of our producer index or more than a ring behind it.
    case consumerOutOfRange(ring: ConsoleRingDirection, producer: UInt32, consumer: UInt32, size: Int)
    /// The shared buffer is smaller than `struct xencons_interface`.
    case pageTooSmall(bytes: Int)
}

// MARK: - The ring

/// One end of a Xen PV console ring over a shared page: the pure, IO-free core of the console.
///
/// Each side owns one index per ring (the backend: `in_prod` and `out_cons`; the guest: `out_prod` and
/// `in_cons`). Those are kept privately here and only published to the page, so a peer scribbling over
/// them cannot make us read or write out of bounds. The peer's indices are read once per call, validated
/// (a producer at most one ring ahead of the consumer), and only then used. Memory fences order the data
/// copies against index publication, as `xen_rmb`/`xen_wmb` do in C.
///
/// OCaml: `Console_ring.Ring.Front` (guest) and `Console_ring.Ring.Back` (backend), Reader and Writer
public struct ConsoleRing: Sendable {
    /// The shared page (at least ``ConsoleRingLayout/minimumPageSize`` bytes).
    public let page: PageBuffer
    /// Which side this end plays.
    public let side: ConsoleRingSide

    /// Our consumer index on the ring we read (`out_cons` for the backend, `in_cons` for the guest).
    public private(set) var consumer: UInt32
    /// Our producer index on the ring we write (`in_prod` for the backend, `out_prod` for the guest).
    public private(set) var producer: UInt32

    private let readRing: RingGeometry
    private let writeRing: RingGeometry

    /// Attaches to the page as `side`, adopting the indices already in it (the initial console page is
    /// not zeroed, so a guest may have printed before the backend arrived: those bytes are kept).
    ///
    /// Throws when the page is too small or the indices found are already impossible.
    ///
    /// OCaml: `Console_ring.Ring.of_buf` (no validation there)
    public init(page: PageBuffer, side: ConsoleRingSide) throws(ConsoleRingError) {
        guard page.count >= ConsoleRingLayout.minimumPageSize else {
            throw .pageTooSmall(bytes: page.count)
        }
        let input = RingGeometry(
            offset: ConsoleRingLayout.inOffset, size: ConsoleRingLayout.inSize,
            prod: ConsoleRingLayout.inProdOffset, cons: ConsoleRingLayout.inConsOffset, direction: .input)
        let output = RingGeometry(
            offset: ConsoleRingLayout.outOffset, size: ConsoleRingLayout.outSize,
            prod: ConsoleRingLayout.outProdOffset, cons: ConsoleRingLayout.outConsOffset, direction: .output)
        switch side {
        case .frontend: (readRing, writeRing) = (input, output)
        case .backend: (readRing, writeRing) = (output, input)
        }
        self.page = page
        self.side = side
        self.consumer = page.uint32(at: readRing.cons)
        self.producer = page.uint32(at: writeRing.prod)
        // Validate what we adopted: both rings must already be consistent.
        _ = try readableCount()
        _ = try writableCount()
    }

    /// Zeroes the indices (and the connection byte to `connection`) of a freshly allocated page, as a
    /// frontend does for an extra console before granting it. Not for the initial console (PR #18).
    ///
    /// OCaml: `Console_ring.Ring.init`
    public static func initialise(page: PageBuffer, connection: UInt8 = ConsoleRingLayout.disconnected) {
        for offset in [
            ConsoleRingLayout.inConsOffset, ConsoleRingLayout.inProdOffset, ConsoleRingLayout.outConsOffset,
            ConsoleRingLayout.outProdOffset,
        ] {
            page.setUInt32(0, at: offset)
        }
        page.setUInt8(connection, at: ConsoleRingLayout.connectionOffset)
    }

    // MARK: - Reading (the ring the peer produces)

    /// Bytes waiting to be read. Validates the peer's producer index.
    ///
    /// OCaml: `Console_ring.Ring.Back.Reader.read` (the length of `avail`)
    public func readableCount() throws(ConsoleRingError) -> Int {
        let producer = peerIndex(at: readRing.prod)
        let pending = producer &- consumer
        guard pending <= UInt32(readRing.size) else {
            throw .producerOutOfRange(
                ring: readRing.direction, producer: producer, consumer: consumer, size: readRing.size)
        }
        return Int(pending)
    }

    /// Copies up to `buffer.count` waiting bytes into `buffer`, publishes the new consumer index and returns
    /// how many were copied (0 when the ring is empty). The caller notifies the peer when non-zero.
    ///
    /// OCaml: `Console_ring.Ring.Back.Reader.read` + `advance`
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(ConsoleRingError) -> Int {
        let pending = try readableCount()
        atomicMemoryFence(ordering: .acquiring)  // read the index before the data it covers
        let count = min(pending, buffer.count)
        guard count > 0, let destination = buffer.baseAddress else { return 0 }
        copyOut(ring: readRing, from: consumer, count: count, to: destination)
        atomicMemoryFence(ordering: .releasing)  // finish reading the data before freeing its slots
        consumer &+= UInt32(count)
        page.setUInt32(consumer, at: readRing.cons)
        return count
    }

    /// Reads up to `maximum` waiting bytes.
    ///
    /// OCaml: `Console_ring.Ring.Back.Reader.read` + `advance` (copying)
    public mutating func read(maximum: Int = ConsoleRingLayout.outSize) throws(ConsoleRingError) -> [UInt8] {
        let wanted = min(maximum, try readableCount())
        guard wanted > 0 else { return [] }
        var result = [UInt8](repeating: 0, count: wanted)
        let got = result.withUnsafeMutableBytes { raw in
            Result { () throws(ConsoleRingError) -> Int in try read(into: raw) }
        }
        result.removeLast(wanted - (try got.get()))
        return result
    }

    // MARK: - Writing (the ring we produce)

    /// Free bytes in the ring we write. Validates the peer's consumer index.
    ///
    /// OCaml: `Console_ring.Ring.Front.Writer.write` (the length of `avail`)
    public func writableCount() throws(ConsoleRingError) -> Int {
        let consumer = peerIndex(at: writeRing.cons)
        let used = producer &- consumer
        guard used <= UInt32(writeRing.size) else {
            throw .consumerOutOfRange(
                ring: writeRing.direction, producer: producer, consumer: consumer, size: writeRing.size)
        }
        return writeRing.size - Int(used)
    }

    /// Copies as many bytes of `bytes` as fit, publishes the new producer index and returns how many were
    /// written (0 when the ring is full). The caller notifies the peer when non-zero.
    ///
    /// OCaml: `Console_ring.Ring.Front.Writer.write` + `advance`
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(ConsoleRingError) -> Int {
        let free = try writableCount()
        atomicMemoryFence(ordering: .acquiring)  // the slots are free only once the index says so
        let count = min(free, bytes.count)
        guard count > 0, let source = bytes.baseAddress else { return 0 }
        copyIn(ring: writeRing, at: producer, count: count, from: source)
        atomicMemoryFence(ordering: .releasing)  // the data must be visible before the index covering it
        producer &+= UInt32(count)
        page.setUInt32(producer, at: writeRing.prod)
        return count
    }

    /// Writes as many of `bytes` as fit; returns how many.
    ///
    /// OCaml: `Console_ring.Ring.Front.Writer.write` + `advance` (copying)
    public mutating func write(_ bytes: [UInt8]) throws(ConsoleRingError) -> Int {
        let written = bytes.withUnsafeBytes { raw in
            Result { () throws(ConsoleRingError) -> Int in try write(raw) }
        }
        return try written.get()
    }

    // MARK: - Connection flag

    /// The `connection` byte (Xen 4.21+). Only the backend sets it; like Linux's hvc_xen, a guest treats only
    /// ``ConsoleRingLayout/disconnected`` as "not serviced", so pages from older toolstacks (zero) work.
    ///
    /// OCaml: none (added to Xen after mirage-console 5.1.0)
    public var connection: UInt8 {
        get { page.uint8(at: ConsoleRingLayout.connectionOffset) }
        nonmutating set { page.setUInt8(newValue, at: ConsoleRingLayout.connectionOffset) }
    }

    // MARK: - Internals

    /// Where one of the two byte rings and its indices sit in the page.
    private struct RingGeometry: Sendable {
        let offset: Int
        let size: Int
        let prod: Int
        let cons: Int
        let direction: ConsoleRingDirection
    }

    /// A single load of an index the peer writes: read once into a local, never re-read.
    private func peerIndex(at offset: Int) -> UInt32 {
        page.uint32(at: offset)
    }

    private func copyOut(
        ring: RingGeometry,
        from index: UInt32, count: Int, to destination: UnsafeMutableRawPointer
    ) {
        page.slice(from: ring.offset, count: ring.size).copyOutOfRing(at: index, count: count, to: destination)
    }

    private func copyIn(
        ring: RingGeometry,
        at index: UInt32, count: Int, from source: UnsafeRawPointer
    ) {
        page.slice(from: ring.offset, count: ring.size).copyIntoRing(at: index, count: count, from: source)
    }
}
