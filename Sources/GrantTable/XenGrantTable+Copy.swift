import CXen
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

extension XenGrantTable: GrantCopyBackend {
    /// Copies with one `xengnttab_grant_copy` call (the gntdev copy ioctl, `GNTTABOP_copy` underneath).
    ///
    /// OCaml: `Xen_os.Xen.Import.copy_to` / `copy_from`
    public func copy(_ segments: [GrantCopySegment]) throws(GrantTableError) {
        guard !segments.isEmpty else { return }
        var raw: [xengnttab_grant_copy_segment_t] = []
        raw.reserveCapacity(segments.count)
        for segment in segments {
            try segment.validate()
            var entry = xengnttab_grant_copy_segment_t()
            entry.len = UInt16(segment.length)
            switch (segment.source, segment.destination) {
            case (.foreign(let domain, let ref, let offset), .local(let local)):
                entry.flags = UInt16(GNTCOPY_source_gref)
                entry.source.foreign.ref = ref.rawValue
                entry.source.foreign.offset = UInt16(offset)
                entry.source.foreign.domid = domain.rawValue
                entry.dest.virt = local.pointer
            case (.local(let local), .foreign(let domain, let ref, let offset)):
                entry.flags = UInt16(GNTCOPY_dest_gref)
                entry.source.virt = local.pointer
                entry.dest.foreign.ref = ref.rawValue
                entry.dest.foreign.offset = UInt16(offset)
                entry.dest.foreign.domid = domain.rawValue
            default:
                throw .unsupported(operation: "grant copy needs exactly one foreign end")
            }
            raw.append(entry)
        }
        // The local views stay alive (held by `segments`) until the call returns.
        let rc = withExtendedLifetime(segments) { xengnttab_grant_copy(handle, UInt32(raw.count), &raw) }
        guard rc == 0 else { throw .system(operation: "xengnttab_grant_copy", errno: errno) }
        for (index, entry) in raw.enumerated() where entry.status != 0 {
            let ref: GrantRef =
                switch segments[index].source {
                case .foreign(_, let ref, _): ref
                case .local:
                    switch segments[index].destination {
                    case .foreign(_, let ref, _): ref
                    case .local: GrantRef(0)
                    }
                }
            // GNTST_* codes (negative): -1 general error, -3 bad gntref, -4 bad virtual address, -8 permission.
            throw .system(operation: "GNTTABOP_copy ref \(ref)", errno: Int32(entry.status))
        }
    }
}
