public import XenCore

/// How a frontend exports its pages to a backend: through its grant table (`grantAccess`, the kernel's
/// way) or, where the table cannot export (userspace on real Xen), through a gntshr interface.
///
/// OCaml: none (a Mirage unikernel always grants from its own table; Unix frontends use `Gnt.Gntshr`)
public enum PageExport {
    /// The gntshr interface to share pages through: `preferred` when given; else, when `grants` refuses to
    /// export (probed with one read-only grant to `peer`, `.unsupported`), a newly opened ``XenGntshr``;
    /// else nil, meaning `grants.grantAccess` works.
    ///
    /// OCaml: none
    public static func sharer(
        for grants: any GrantTableBackend, preferring preferred: (any GntshrBackend)?, peer: DomainID
    ) async throws -> (any GntshrBackend)? {
        if let preferred { return preferred }
        let ref = try await grants.refs.get()
        defer { _ = grants.refs.put(ref) }
        do {
            try grants.grantAccess(ref, to: peer, writable: false, page: grants.allocatePages(1))
        } catch .unsupported {
            return try XenGntshr()
        } catch {
            return nil  // Some other refusal: the grantAccess path reports it properly.
        }
        try? grants.endAccess(ref)
        return nil
    }
}
