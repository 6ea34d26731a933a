public import GrantTable
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension SimulatedGrantTable: GrantCopyBackend {
    /// Copies between this domain's memory and pages other domains granted it, checking each grant as Xen's
    /// `GNTTABOP_copy` does: it must exist, name this domain, and be writable when it is the destination.
    ///
    /// OCaml: `Xen_os.Xen.Import.copy_to` / `copy_from`
    public func copy(_ segments: [GrantCopySegment]) throws(GrantTableError) {
        for segment in segments { try segment.validate() }
        // Every grant looked up under one acquisition of the hypervisor lock, then the bytes moved outside it.
        // The granted memory values keep the pages alive for the copies.
        let pages = try grantedPages(for: segments)
        for (segment, page) in zip(segments, pages) {
            switch (segment.source, segment.destination) {
            case (.foreign(_, _, let offset), .local(let local)):
                memcpy(local.pointer, page.address + offset, segment.length)
            case (.local(let local), .foreign(_, _, let offset)):
                memcpy(page.address + offset, local.pointer, segment.length)
            default:
                throw .unsupported(operation: "grant copy needs exactly one foreign end")
            }
        }
    }

    /// The memory behind each segment's foreign grant (each value retains it).
    private func grantedPages(for segments: [GrantCopySegment]) throws(GrantTableError) -> [GrantedMemory] {
        let copier = domain
        let result: Result<[GrantedMemory], GrantTableError> = hypervisor.state.withLock { state in
            guard state.domains[copier] != nil else { return .failure(.noSuchDomain(copier)) }
            var pages: [GrantedMemory] = []
            pages.reserveCapacity(segments.count)
            for segment in segments {
                let (granter, ref, writing): (DomainID, GrantRef, Bool)
                switch (segment.source, segment.destination) {
                case (.foreign(let domain, let foreignRef, _), .local):
                    (granter, ref, writing) = (domain, foreignRef, false)
                case (.local, .foreign(let domain, let foreignRef, _)):
                    (granter, ref, writing) = (domain, foreignRef, true)
                default: return .failure(.unsupported(operation: "grant copy needs exactly one foreign end"))
                }
                guard let record = state.domains[granter] else { return .failure(.noSuchDomain(granter)) }
                guard let entry = record.grants[ref.rawValue], !entry.unsharePending else {
                    return .failure(.notGranted(domain: granter, ref: ref))
                }
                guard entry.grantee == copier else {
                    return .failure(.wrongDomain(ref: ref, grantee: entry.grantee, mapper: copier))
                }
                guard !writing || entry.writable else { return .failure(.readOnly(domain: granter, ref: ref)) }
                pages.append(entry.memory)
            }
            return .success(pages)
        }
        return try result.get()
    }
}
