public import XenCore
public import XenStoreClient
public import Xenbus

/// One xenstore node a toolstack writes for a console, with the permissions it gets.
///
/// OCaml: an element of `Conproto.Connection.to_assoc_list` (`acl, (key, value)`)
public struct ConsoleNode: Hashable, Sendable {
    /// Absolute path.
    public var path: String
    /// Value written.
    public var value: String
    /// Owner and ACL set on it.
    public var permissions: XenStorePermissions
}

/// The toolstack's side of consoles: create and destroy the xenstore nodes of a guest's primary console
/// and of extra PV consoles, with the ownership the protocol needs (frontend nodes owned by the guest and
/// readable by the backend; backend nodes owned by the backend and readable by the guest).
///
/// OCaml: `Conback.Make.create`, `destroy`, `request_close`, `force_close`; `Conproto.Connection`
public enum ConsoleToolstack {
    // MARK: - Node lists (pure)

    /// The nodes of extra console `id` served by `backend`, in creation order (directories first).
    ///
    /// OCaml: `Conproto.Connection.to_assoc_list` (`Connection.make ~backend_domid ?name ~frontend_domid
    /// ~virtual_device`)
    public static func deviceNodes(_ id: ConsoleID, backend: DomainID = .dom0, name: String? = nil)
        -> [ConsoleNode]
    {
        guard let backendPath = id.backendPath(backend: backend) else { return [] }
        let frontendPath = id.frontendPath
        let frontendACL = XenStorePermissions(owner: id.domain, others: .none, acl: [.init(.read, backend)])
        let backendACL = XenStorePermissions(owner: backend, others: .none, acl: [.init(.read, id.domain)])
        func node(_ path: String, _ value: String, _ acl: XenStorePermissions) -> ConsoleNode {
            ConsoleNode(path: path, value: value, permissions: acl)
        }
        var nodes = [
            node(backendPath, "", backendACL),
            node(frontendPath, "", frontendACL),
            node("\(backendPath)/\(ConsoleKeys.frontend)", frontendPath, backendACL),
            node("\(backendPath)/\(ConsoleKeys.frontendID)", String(id.domain.rawValue), backendACL),
            node("\(backendPath)/\(ConsoleKeys.online)", "1", backendACL),
            node("\(backendPath)/\(ConsoleKeys.state)", XenbusState.initialising.xenstoreValue, backendACL),
            node("\(backendPath)/\(ConsoleKeys.protocol)", "vt100", backendACL),
            node("\(frontendPath)/\(ConsoleKeys.backend)", backendPath, frontendACL),
            node("\(frontendPath)/\(ConsoleKeys.backendID)", String(backend.rawValue), frontendACL),
            node("\(frontendPath)/\(ConsoleKeys.state)", XenbusState.initialising.xenstoreValue, frontendACL),
            node("\(frontendPath)/\(ConsoleKeys.protocol)", "vt100", frontendACL),
            node("\(frontendPath)/\(ConsoleKeys.limit)", "1048576", backendACL),
            node("\(frontendPath)/\(ConsoleKeys.output)", "pty", backendACL),
            node("\(frontendPath)/\(ConsoleKeys.tty)", "", backendACL),
        ]
        if let name { nodes.append(node("\(frontendPath)/\(ConsoleKeys.name)", name, frontendACL)) }
        return nodes
    }

    /// The nodes of `domain`'s primary console: `ring-ref` and `port` as the domain builder publishes them,
    /// plus `type`, `limit`, `output` and an empty `tty` for the daemon. Owned by `backend` (the guest only
    /// reads them; the daemon writes `tty`).
    ///
    /// C: `libxl__build_post` (`console/ring-ref`, `console/port`) + `libxl__device_console_add` for console 0
    public static func primaryNodes(domain: DomainID, ring: ConsoleRingInfo, backend: DomainID = .dom0)
        -> [ConsoleNode]
    {
        let directory = ConsoleID(domain: domain, device: .primary).frontendPath
        let acl = XenStorePermissions(owner: backend, others: .none, acl: [.init(.read, domain)])
        return [
            ConsoleNode(path: directory, value: "", permissions: acl),
            ConsoleNode(path: "\(directory)/\(ConsoleKeys.ringRef)", value: ring.ringRef.description, permissions: acl),
            ConsoleNode(path: "\(directory)/\(ConsoleKeys.port)", value: ring.port.description, permissions: acl),
            ConsoleNode(path: "\(directory)/\(ConsoleKeys.limit)", value: "1048576", permissions: acl),
            ConsoleNode(path: "\(directory)/\(ConsoleKeys.type)", value: "xenconsoled", permissions: acl),
            ConsoleNode(path: "\(directory)/\(ConsoleKeys.output)", value: "pty", permissions: acl),
            ConsoleNode(path: "\(directory)/\(ConsoleKeys.tty)", value: "", permissions: acl),
        ]
    }

    // MARK: - Creating and destroying

    /// Creates extra console `id` (frontend and backend directories) in one transaction.
    ///
    /// OCaml: `Conback.Make.create ?backend_domid ?name`
    public static func createDevice(
        _ id: ConsoleID, backend: DomainID = .dom0, name: String? = nil, store: any XenbusStore
    ) async throws(ConsoleError) {
        try await write(deviceNodes(id, backend: backend, name: name), store: store)
    }

    /// Publishes `domain`'s primary console ring in one transaction.
    ///
    /// C: `libxl__build_post` console keys
    public static func createPrimary(
        domain: DomainID, ring: ConsoleRingInfo, backend: DomainID = .dom0, store: any XenbusStore
    ) async throws(ConsoleError) {
        try await write(primaryNodes(domain: domain, ring: ring, backend: backend), store: store)
    }

    /// Removes both directories of extra console `id` (missing ones are fine).
    ///
    /// OCaml: `Conback.Make.destroy`
    public static func destroyDevice(
        _ id: ConsoleID, backend: DomainID = .dom0, store: any XenbusStore
    ) async throws(ConsoleError) {
        var paths = [id.frontendPath]
        if let backendPath = id.backendPath(backend: backend) { paths.insert(backendPath, at: 0) }
        for path in paths { try await remove(path, store: store) }
    }

    /// Removes `domain`'s primary console directory.
    ///
    /// C: `libxl__devices_destroy` / `xs_rm` of the domain path
    public static func destroyPrimary(domain: DomainID, store: any XenbusStore) async throws(ConsoleError) {
        try await remove(ConsoleID(domain: domain, device: .primary).frontendPath, store: store)
    }

    /// Asks the backend to close: backend `state = Closing`.
    ///
    /// OCaml: `Conback.Make.request_close`
    public static func requestClose(
        _ id: ConsoleID, backend: DomainID = .dom0, store: any XenbusStore
    ) async throws(ConsoleError) {
        guard let backendPath = id.backendPath(backend: backend) else { return }
        try await writeOne("\(backendPath)/\(ConsoleKeys.state)", XenbusState.closing.xenstoreValue, store)
    }

    /// Forces the device down: frontend `state = Closed`, which the backend treats as the guest leaving.
    ///
    /// OCaml: `Conback.Make.force_close`
    public static func forceClose(_ id: ConsoleID, store: any XenbusStore) async throws(ConsoleError) {
        try await writeOne("\(id.frontendPath)/\(ConsoleKeys.state)", XenbusState.closed.xenstoreValue, store)
    }

    // MARK: - Helpers

    /// Every node written with its owner and readers (the seam's permission model: everyone else gets
    /// nothing, which is what ``deviceNodes(_:backend:name:)`` and ``primaryNodes(domain:ring:backend:)`` give).
    private static func write(_ nodes: [ConsoleNode], store: any XenbusStore) async throws(ConsoleError) {
        let written = nodes.map { node in
            XenbusNode(
                path: node.path, value: node.value, owner: node.permissions.owner,
                readers: node.permissions.acl.filter { $0.access.canRead }.map(\.domain))
        }
        do {
            try await store.write(written)
        } catch {
            throw .xenstore(op: "transaction", path: nodes.first?.path ?? "", underlying: error)
        }
    }

    private static func writeOne(_ path: String, _ value: String, _ store: any XenbusStore)
        async throws(ConsoleError)
    {
        do {
            try await store.write(path, value)
        } catch {
            throw .xenstore(op: "write", path: path, underlying: error)
        }
    }

    private static func remove(_ path: String, store: any XenbusStore) async throws(ConsoleError) {
        do {
            try await store.remove(path)
        } catch {
            throw .xenstore(op: "rm", path: path, underlying: error)
        }
    }
}

// MARK: - Over a XenStoreClient

extension ConsoleToolstack {
    /// ``createDevice(_:backend:name:store:)`` with `store: XenStoreBus(client: xenstore)`.
    ///
    /// OCaml: `Conback.Make.create ?backend_domid ?name`
    public static func createDevice(
        _ id: ConsoleID, backend: DomainID = .dom0, name: String? = nil, xenstore: XenStoreClient
    ) async throws(ConsoleError) {
        try await createDevice(id, backend: backend, name: name, store: XenStoreBus(client: xenstore))
    }

    /// ``createPrimary(domain:ring:backend:store:)`` with `store: XenStoreBus(client: xenstore)`.
    ///
    /// C: `libxl__build_post` console keys
    public static func createPrimary(
        domain: DomainID, ring: ConsoleRingInfo, backend: DomainID = .dom0, xenstore: XenStoreClient
    ) async throws(ConsoleError) {
        try await createPrimary(domain: domain, ring: ring, backend: backend, store: XenStoreBus(client: xenstore))
    }

    /// ``destroyDevice(_:backend:store:)`` with `store: XenStoreBus(client: xenstore)`.
    ///
    /// OCaml: `Conback.Make.destroy`
    public static func destroyDevice(
        _ id: ConsoleID, backend: DomainID = .dom0, xenstore: XenStoreClient
    ) async throws(ConsoleError) {
        try await destroyDevice(id, backend: backend, store: XenStoreBus(client: xenstore))
    }

    /// ``destroyPrimary(domain:store:)`` with `store: XenStoreBus(client: xenstore)`.
    ///
    /// C: `libxl__devices_destroy` / `xs_rm` of the domain path
    public static func destroyPrimary(domain: DomainID, xenstore: XenStoreClient) async throws(ConsoleError) {
        try await destroyPrimary(domain: domain, store: XenStoreBus(client: xenstore))
    }

    /// ``requestClose(_:backend:store:)`` with `store: XenStoreBus(client: xenstore)`.
    ///
    /// OCaml: `Conback.Make.request_close`
    public static func requestClose(
        _ id: ConsoleID, backend: DomainID = .dom0, xenstore: XenStoreClient
    ) async throws(ConsoleError) {
        try await requestClose(id, backend: backend, store: XenStoreBus(client: xenstore))
    }

    /// ``forceClose(_:store:)`` with `store: XenStoreBus(client: xenstore)`.
    ///
    /// OCaml: `Conback.Make.force_close`
    public static func forceClose(_ id: ConsoleID, xenstore: XenStoreClient) async throws(ConsoleError) {
        try await forceClose(id, store: XenStoreBus(client: xenstore))
    }
}
