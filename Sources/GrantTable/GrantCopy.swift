public import XenCore

/// One end of a grant copy: memory of this domain, or a page another domain granted us.
///
/// OCaml: the `~src`/`~dst` arguments of `Xen_os.Xen.Import.copy_to` / `copy_from`
public enum GrantCopyEndpoint: Sendable {
    /// Bytes of this domain, from the start of the view.
    case local(PageBuffer)
    /// `offset` bytes into the page `domain` granted us under `ref` (offset + length stays inside the page).
    case foreign(domain: DomainID, ref: GrantRef, offset: Int)
}

/// One `GNTTABOP_copy` operation: `length` bytes from `source` to `destination`, one end local and one
/// foreign (as the gntdev copy ioctl requires).
///
/// OCaml: the arguments of `Xen_os.Xen.Import.copy_to ~src ~src_off ~domid ~gref ~dst_off ~len`
public struct GrantCopySegment: Sendable {
    /// Where the bytes come from.
    public var source: GrantCopyEndpoint
    /// Where they go.
    public var destination: GrantCopyEndpoint
    /// How many (at most 4096; a foreign end's offset + length stays inside its page).
    public var length: Int

    /// A segment.
    ///
    /// OCaml: none (one labelled-argument call per segment there)
    public init(from source: GrantCopyEndpoint, to destination: GrantCopyEndpoint, length: Int) {
        self.source = source
        self.destination = destination
        self.length = length
    }

    /// Checks the shape: exactly one foreign end, lengths and offsets inside their pages and views.
    ///
    /// OCaml: none (the hypervisor checks; here the shape is refused before any byte moves)
    public func validate() throws(GrantTableError) {
        guard length >= 0, length <= xenPageSize else { throw .invalidCount(length) }
        switch (source, destination) {
        case (.local(let local), .foreign(_, _, let offset)), (.foreign(_, _, let offset), .local(let local)):
            guard local.count >= length else { throw .invalidPage(offset: local.offset, count: local.count) }
            guard offset >= 0, offset + length <= xenPageSize else { throw .invalidPage(offset: offset, count: length) }
        default:
            throw .unsupported(operation: "grant copy needs exactly one foreign end")
        }
    }
}

/// Grant copy: move bytes to or from pages another domain granted us, without mapping them (one hypercall
/// for a batch, where map + copy + unmap takes two plus page-table work). Backends that copy frames
/// (NetBack's rx-copy and tx paths) use it when the grant table offers it.
///
/// Implementations: `XenGrantTable` (`xengnttab_grant_copy`, since Xen 4.8) and `SimulatedGrantTable`.
/// OCaml: `Xen_os.Xen.Import.copy_to` / `copy_from` (mirage-xen 9)
public protocol GrantCopyBackend: Sendable {
    /// Runs every segment in order. Throws the first failure (a ref not granted to us, a read-only grant
    /// as destination, a bad shape); segments after it have not been copied, those before it may have been.
    ///
    /// OCaml: `Xen_os.Xen.Import.copy_to` / `copy_from`, one call per segment
    func copy(_ segments: [GrantCopySegment]) throws(GrantTableError)
}
