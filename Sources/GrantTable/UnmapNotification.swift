public import XenCore

/// What the kernel does for a peer when one of our shares or mappings goes away — unshared, unmapped, or
/// its process killed — with no code of ours left to run: one byte of the first page set to zero and one
/// event sent. libxenvchan arms it on its shared page's "live" byte, so a vchan peer learns of a crash.
///
/// OCaml: none (ocaml-gnt has no notify calls); C: `xengntshr_share_page_notify`,
/// `xengnttab_map_grant_ref_notify` (gntalloc/gntdev `UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT`)
public struct UnmapNotification: Sendable, Hashable {
    /// The byte of the first page cleared, or nil for none. Must lie inside the page.
    public var byteOffset: Int?
    /// The local port an event is sent on (to its remote end), or nil for none.
    public var port: EventChannelPort?

    /// A notification clearing `byteOffset` (if given) and signalling `port` (if given).
    ///
    /// OCaml: none (see the type)
    public init(byteOffset: Int?, port: EventChannelPort?) {
        self.byteOffset = byteOffset
        self.port = port
    }
}

/// A gntshr interface that can arm an ``UnmapNotification`` on a shared page.
///
/// Implementations: `XenGntshr` (gntalloc) and `SimulatedGntshr`.
/// OCaml: none (see ``UnmapNotification``)
public protocol UnmapNotifyingGntshr: GntshrBackend {
    /// Allocates one zeroed page, grants it to `domain` and arms `notify` for when it is unshared (or this
    /// process dies). Throws `.invalidNotifyOffset` for a byte outside the page.
    ///
    /// OCaml: none; C: `xengntshr_share_page_notify`
    func sharePage(with domain: DomainID, writable: Bool, notify: UnmapNotification) throws(GrantTableError)
        -> SharedPages
}

/// A grant table whose import side can arm an ``UnmapNotification`` on a mapping.
///
/// Implementations: `XenGrantTable` (gntdev) and `SimulatedGrantTable`.
/// OCaml: none (see ``UnmapNotification``)
public protocol UnmapNotifyingGrantTable: GrantTableBackend {
    /// Maps one page `domain` granted us and arms `notify` for when it is unmapped (or this process dies).
    /// Throws `.invalidNotifyOffset` for a byte outside the page.
    ///
    /// OCaml: none; C: `xengnttab_map_grant_ref_notify`
    func map(domain: DomainID, ref: GrantRef, writable: Bool, notify: UnmapNotification) throws(GrantTableError)
        -> GrantMapping
}

extension UnmapNotification {
    /// The byte offset and port as libxengnttab takes them (-1 for "none"), or nil when the offset is outside
    /// the page.
    var cArguments: (offset: UInt32, port: UInt32)? {
        if let byteOffset, !(0..<xenPageSize).contains(byteOffset) { return nil }
        return (byteOffset.map { UInt32($0) } ?? UInt32.max, port?.rawValue ?? UInt32.max)
    }
}
