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
        for segment in segments {
            try segment.validate()
            switch (segment.source, segment.destination) {
            case (.foreign(let granter, let ref, let offset), .local(let local)):
                let page = try grantedPage(granter: granter, ref: ref, writing: false)
                memcpy(local.pointer, page.pointer + offset, segment.length)
            case (.local(let local), .foreign(let granter, let ref, let offset)):
                let page = try grantedPage(granter: granter, ref: ref, writing: true)
                memcpy(page.pointer + offset, local.pointer, segment.length)
            default:
                throw .unsupported(operation: "grant copy needs exactly one foreign end")
            }
        }
    }

    /// The page behind `granter`'s grant `ref` to this domain (the view retains its memory).
    private func grantedPage(granter: DomainID, ref: GrantRef, writing: Bool) throws(GrantTableError) -> PageBuffer {
        let copier = domain
        let result: Result<PageBuffer, GrantTableError> = hypervisor.state.withLock { state in
            guard state.domains[copier] != nil else { return .failure(.noSuchDomain(copier)) }
            guard let record = state.domains[granter] else { return .failure(.noSuchDomain(granter)) }
            guard let entry = record.grants[ref.rawValue], !entry.unsharePending else {
                return .failure(.notGranted(domain: granter, ref: ref))
            }
            guard entry.grantee == copier else {
                return .failure(.wrongDomain(ref: ref, grantee: entry.grantee, mapper: copier))
            }
            guard !writing || entry.writable else { return .failure(.readOnly(domain: granter, ref: ref)) }
            return .success(entry.page)
        }
        return try result.get()
    }
}
