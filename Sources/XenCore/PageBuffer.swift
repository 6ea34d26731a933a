#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The size of a Xen page: 4096 bytes on every architecture SwiftXen supports.
public let xenPageSize = 4096

/// A bounds-checked view of page memory: the Swift twin of `Cstruct.t`.
///
/// Slices share memory with the buffer they come from and never move, so a buffer can be granted to another
/// domain and written by it while Swift code holds it. Accessors are little-endian, as every Xen ABI is on
/// the architectures SwiftXen supports. Copying a `PageBuffer` copies the view, not the bytes.
///
/// ## Concurrency
/// `PageBuffer` is `Sendable` because shared memory is concurrent by nature: the domain at the other end
/// writes it whenever it likes, and no Swift type can stop that. The view therefore promises only memory
/// safety of each access (bounds-checked, and the pages stay mapped while any view is alive), not atomicity
/// between accesses: the same rules as `Cstruct.t` in Lwt, made explicit.
/// - Bytes the peer may write are read once into a local copy, validated, then used (never read twice and
///   trusted both times: the XSA-155 double fetch).
/// - Indices shared with the peer go through the ring code of each protocol (`SharedRing`'s header,
///   the console and vchan rings): acquiring loads of the peer's index, releasing stores of our own and the
///   barriers of Xen's `ring.h` — the plain accessors here order nothing.
/// - Within one process, give each writable region one writer (one task, or one lock-protected state
///   machine); two tasks writing the same bytes of a view get no ordering between them.
///
/// OCaml: `Cstruct.t` / `Io_page.t`
public struct PageBuffer: Sendable {
    /// The memory behind this view.
    public let storage: PageStorage
    /// Offset of the first byte of this view inside `storage`.
    public let offset: Int
    /// Bytes in this view.
    public let count: Int

    /// Allocates `pages` zero-filled pages aligned to 4096.
    ///
    /// OCaml: `Io_page.get`
    public init(pages: Int) {
        let storage = PageStorage(pages: pages)
        self.init(storage: storage, offset: 0, count: storage.byteCount)
    }

    /// A view of `count` bytes of `storage` starting at `offset`.
    public init(storage: PageStorage, offset: Int = 0, count: Int? = nil) {
        let count = count ?? (storage.byteCount - offset)
        precondition(offset >= 0 && count >= 0 && offset + count <= storage.byteCount, "PageBuffer out of storage")
        self.storage = storage
        self.offset = offset
        self.count = count
    }

    /// Allocates enough zero-filled whole pages (at least one) for `byteCount` bytes; the view covers exactly
    /// `byteCount`.
    ///
    /// OCaml: `Io_page.get` then `Cstruct.sub` to the length
    public init(byteCount: Int) {
        let pages = max(1, (byteCount + xenPageSize - 1) / xenPageSize)
        self.init(storage: PageStorage(pages: pages), offset: 0, count: byteCount)
    }

    /// Allocates enough whole pages for `bytes` and copies them in; the view covers exactly `bytes.count`.
    public init(copying bytes: some Collection<UInt8>) {
        self.init(byteCount: bytes.count)
        var index = 0
        for byte in bytes {
            pointer.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
            index += 1
        }
    }

    /// The address of the first byte of this view.
    public var pointer: UnsafeMutableRawPointer { storage.base + offset }

    /// True when the view starts on a page boundary.
    public var isPageAligned: Bool { Int(bitPattern: pointer) % xenPageSize == 0 }

    /// Whole pages covered by this view (rounded up).
    public var pageCount: Int { (count + xenPageSize - 1) / xenPageSize }

    /// A sub-view sharing memory. Traps when out of range: use ``checkedSlice(from:count:)`` for untrusted values.
    ///
    /// OCaml: `Cstruct.sub`
    public func slice(from start: Int, count length: Int) -> PageBuffer {
        precondition(start >= 0 && length >= 0 && start <= count && length <= count - start, "slice out of range")
        return PageBuffer(storage: storage, offset: offset + start, count: length)
    }

    /// A sub-view, or nil when `start`/`length` do not fit (for values that came from another domain).
    public func checkedSlice(from start: Int, count length: Int) -> PageBuffer? {
        guard start >= 0, length >= 0, start <= count, length <= count - start else { return nil }
        return PageBuffer(storage: storage, offset: offset + start, count: length)
    }

    /// The view split into consecutive page-sized pieces (the last may be shorter).
    ///
    /// OCaml: `Io_page.to_pages`
    public var pages: [PageBuffer] {
        stride(from: 0, to: count, by: xenPageSize).map { slice(from: $0, count: min(xenPageSize, count - $0)) }
    }

    // MARK: - Little-endian accessors (bounds-checked)

    @inline(__always)
    private func check(_ at: Int, _ width: Int) {
        precondition(at >= 0 && width <= count && at <= count - width, "PageBuffer access out of bounds")
    }

    /// OCaml: `Cstruct.get_uint8`
    public func uint8(at index: Int) -> UInt8 {
        check(index, 1)
        return pointer.load(fromByteOffset: index, as: UInt8.self)
    }
    /// OCaml: `Cstruct.set_uint8`
    public func setUInt8(_ value: UInt8, at index: Int) {
        check(index, 1)
        pointer.storeBytes(of: value, toByteOffset: index, as: UInt8.self)
    }
    /// OCaml: `Cstruct.LE.get_uint16`
    public func uint16(at index: Int) -> UInt16 {
        check(index, 2)
        return UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: index, as: UInt16.self))
    }
    /// OCaml: `Cstruct.LE.set_uint16`
    public func setUInt16(_ value: UInt16, at index: Int) {
        check(index, 2)
        pointer.storeBytes(of: value.littleEndian, toByteOffset: index, as: UInt16.self)
    }
    /// OCaml: `Cstruct.LE.get_uint32`
    public func uint32(at index: Int) -> UInt32 {
        check(index, 4)
        return UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: index, as: UInt32.self))
    }
    /// OCaml: `Cstruct.LE.set_uint32`
    public func setUInt32(_ value: UInt32, at index: Int) {
        check(index, 4)
        pointer.storeBytes(of: value.littleEndian, toByteOffset: index, as: UInt32.self)
    }
    /// OCaml: `Cstruct.LE.get_uint64`
    public func uint64(at index: Int) -> UInt64 {
        check(index, 8)
        return UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: index, as: UInt64.self))
    }
    /// OCaml: `Cstruct.LE.set_uint64`
    public func setUInt64(_ value: UInt64, at index: Int) {
        check(index, 8)
        pointer.storeBytes(of: value.littleEndian, toByteOffset: index, as: UInt64.self)
    }

    // MARK: - Bulk

    /// Zero-copy access to the bytes of this view.
    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// Copies `other` into the start of this view. Traps if it does not fit.
    ///
    /// OCaml: `Cstruct.blit`
    public func copy(from other: PageBuffer) {
        precondition(other.count <= count, "copy source larger than destination")
        memmove(pointer, other.pointer, other.count)
    }

    /// Copies `bytes` into this view at `index`. Traps if they do not fit.
    ///
    /// OCaml: `Cstruct.blit_from_bytes`
    public func copy(from bytes: UnsafeRawBufferPointer, at index: Int = 0) {
        check(index, bytes.count)
        if let source = bytes.baseAddress { memmove(pointer + index, source, bytes.count) }
    }

    /// Sets every byte of this view to `value`.
    ///
    /// OCaml: `Cstruct.memset`
    public func fill(_ value: UInt8) { memset(pointer, Int32(value), count) }

    /// A copy of the bytes of this view.
    ///
    /// OCaml: `Cstruct.to_bytes`
    public var bytes: [UInt8] {
        [UInt8](UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Byte-wise equality of contents (not identity).
    ///
    /// OCaml: `Cstruct.equal`
    public func contentsEqual(_ other: PageBuffer) -> Bool {
        count == other.count && memcmp(pointer, other.pointer, count) == 0
    }
}
