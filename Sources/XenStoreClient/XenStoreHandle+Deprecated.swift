public import XenCore
public import XenStoreProtocol

// The OCaml spellings the handle had before it took Swift names (see CHANGELOG.md, "Unreleased"). Each one
// forwards to its Swift name; the compiler's fix-it renames the call.
extension XenStoreHandle {
    /// Removes `path` and everything below it: renamed ``remove(_:)``.
    ///
    /// OCaml: `Xs_client_lwt.S.rm`
    @available(*, deprecated, renamed: "remove(_:)")
    public func rm(_ path: String) async throws(XenStoreError) {
        try await remove(path)
    }

    /// Creates `path` with an empty value: renamed ``createDirectory(_:)``.
    ///
    /// OCaml: `Xs_client_lwt.S.mkdir`
    @available(*, deprecated, renamed: "createDirectory(_:)")
    public func mkdir(_ path: String) async throws(XenStoreError) {
        try await createDirectory(path)
    }

    /// Sets `path`'s permissions: renamed ``setPermissions(_:to:)``.
    ///
    /// OCaml: `Xs_client_lwt.S.setperms`
    @available(*, deprecated, renamed: "setPermissions(_:to:)")
    public func setperms(_ path: String, _ permissions: XenStorePermissions) async throws(XenStoreError) {
        try await setPermissions(path, to: permissions)
    }

    /// `path`'s permissions: renamed ``permissions(of:)``.
    ///
    /// OCaml: `Xs_protocol.Request.getperms` (not in `Xs_client_lwt.S`; libxenstore `xs_get_permissions`)
    @available(*, deprecated, renamed: "permissions(of:)")
    public func getperms(_ path: String) async throws(XenStoreError) -> XenStorePermissions {
        try await permissions(of: path)
    }

    /// The home path of `domain`: renamed ``domainPath(of:)``.
    ///
    /// OCaml: `Xs_client_lwt.S.getdomainpath`
    @available(*, deprecated, renamed: "domainPath(of:)")
    public func getDomainPath(_ domain: DomainID) async throws(XenStoreError) -> String {
        try await domainPath(of: domain)
    }
}
