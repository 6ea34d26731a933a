import GrantTable
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// Copies to and from the pages a frontend granted: with grant copy where the grant table has it (one
/// hypercall per batch, nothing mapped), else by mapping each page for the copy and unmapping it at once.
///
/// OCaml: `Xen_os.Xen.Import.copy_to` / `copy_from` (mirage-xen 9), map + blit + unmap before
struct FrontendCopier: Sendable {
    let grants: any GrantTableBackend
    let frontend: DomainID

    func copy(_ segments: [GrantCopySegment]) throws(GrantTableError) {
        if let copier = grants as? any GrantCopyBackend { return try copier.copy(segments) }
        for segment in segments {
            try segment.validate()
            switch (segment.source, segment.destination) {
            case (.foreign(let domain, let ref, let offset), .local(let local)):
                let mapping = try grants.map(domain: domain, ref: ref, writable: false)
                memcpy(local.pointer, mapping.buffer.pointer + offset, segment.length)
                try mapping.unmap()
            case (.local(let local), .foreign(let domain, let ref, let offset)):
                let mapping = try grants.map(domain: domain, ref: ref, writable: true)
                memcpy(mapping.buffer.pointer + offset, local.pointer, segment.length)
                try mapping.unmap()
            default:
                throw .unsupported(operation: "grant copy needs exactly one foreign end")
            }
        }
    }
}
