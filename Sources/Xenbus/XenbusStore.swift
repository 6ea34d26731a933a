public import XenCore

/// The xenstore operations a split device driver needs: the seam between the xenbus handshake and a
/// xenstore client. BlockFront, BlockBack, NetFront and NetBack take it; a `XenStoreClient` conforms
/// through ``XenStoreBus``, and tests may pass any other implementation.
///
/// OCaml: the subset of `Xs_client_lwt.S` that `Blkfront`/`Blkback` call (`read`, `write`, `rm`,
/// `setperms`, `transaction`, `wait`)
public protocol XenbusStore: Sendable {
    /// The value at `path`, or nil when it does not exist.
    ///
    /// OCaml: `Xs.read` (with `Enoent` mapped to `None`)
    func read(_ path: String) async throws -> String?

    /// Writes every pair in one transaction (retried on conflict).
    ///
    /// OCaml: `Xs.transaction` over `Xs.write`
    func write(_ pairs: [(path: String, value: String)]) async throws

    /// Removes `path` and everything below it; no error when absent.
    ///
    /// OCaml: `Xs.rm`
    func remove(_ path: String) async throws

    /// Makes `owner` the owner of `path` and lets `readers` read it (everyone else: no access).
    ///
    /// OCaml: `Xs.setperms` with `Xs_protocol.ACL.{owner; other = NONE; acl = [readers, READ]}`
    func setPermissions(_ path: String, owner: DomainID, readers: [DomainID]) async throws

    /// Re-evaluates `check` whenever something under one of `paths` changes (and once at the start) until it
    /// returns a value. Cancellation ends the wait with `CancellationError`.
    ///
    /// OCaml: `Xs.wait` (which re-runs its closure on `Eagain`)
    func wait<T: Sendable>(
        watching paths: [String], until check: @escaping @Sendable () async throws -> T?
    ) async throws -> T

    /// The names of `path`'s children; empty when `path` does not exist.
    ///
    /// OCaml: `Xs.directory` (with `Enoent` mapped to `[]`)
    func directory(_ path: String) async throws -> [String]

    /// Writes every node and sets its permissions, all in one transaction (retried on conflict).
    ///
    /// OCaml: `Xs.transaction` over `Xs.write` and `Xs.setperms` (as `Conback.create` does)
    func write(_ nodes: [XenbusNode]) async throws

    /// Writes `value` at `path` only if `path` exists, in one transaction; returns whether it wrote (a
    /// toolstack may have removed the device meanwhile, and a plain write would recreate the node).
    ///
    /// OCaml: `Xs.transaction` over `Xs.read` and `Xs.write`
    func writeIfPresent(_ path: String, _ value: String) async throws -> Bool

    /// Watches `paths` (each with everything below it) and returns the changed paths as they come: each
    /// watch fires once when registered (all are registered before this returns), then on every change.
    /// The stream ends when the consuming task is cancelled, and throws when the connection is lost.
    ///
    /// OCaml: none (`Xs_client_lwt` only has `wait`; xenconsoled's `xs_watch` + `xs_read_watch`)
    func watch(_ paths: [String]) async throws -> AsyncThrowingStream<String, any Error>

    /// Which xenstore connection this is, so that a frontend refuses a second connect to one device made
    /// through it while letting the same paths of another xenstore (each in-memory xenstored of a test
    /// holds its own `/local/domain/1/...`) be connected. nil (the default): paths alone name a device.
    ///
    /// OCaml: none (a unikernel has one xenstore)
    var connectionIdentity: ObjectIdentifier? { get }
}

/// One node the `[XenbusNode]` form of `XenbusStore.write(_:)` creates: its value, its owner, and the
/// domains that may read it (everyone else: no access).
///
/// OCaml: an element of `Conproto.Connection.to_assoc_list` (`acl, (key, value)`)
public struct XenbusNode: Hashable, Sendable {
    /// Absolute path.
    public var path: String
    /// Value written.
    public var value: String
    /// The domain owning the node (it may read and write it).
    public var owner: DomainID
    /// The other domains that may read it.
    public var readers: [DomainID]

    /// A node from its parts.
    ///
    /// OCaml: `(Xs_protocol.ACL.{owner; other = NONE; acl = readers with READ}, (path, value))`
    public init(path: String, value: String, owner: DomainID, readers: [DomainID]) {
        self.path = path
        self.value = value
        self.owner = owner
        self.readers = readers
    }
}

extension XenbusStore {
    /// nil: the paths alone name a device.
    ///
    /// OCaml: none
    public var connectionIdentity: ObjectIdentifier? { nil }

    /// Writes one key.
    ///
    /// OCaml: `Xs.write`
    public func write(_ path: String, _ value: String) async throws { try await write([(path, value)]) }

    /// Reads the keys `names` of directory `dir` into a dictionary (absent keys are left out).
    ///
    /// OCaml: `Blkproto.DiskInfo` readers do one `Xs.read` per key
    public func readKeys(_ names: [String], in dir: String) async throws -> [String: String] {
        var result: [String: String] = [:]
        for name in names {
            if let value = try await read(dir + "/" + name) { result[name] = value }
        }
        return result
    }

    /// Creates a split device's two directories with the owners and permissions Xen's toolstack gives them:
    /// the frontend directory owned by the guest and readable by the backend domain, the backend directory
    /// owned by the backend domain and readable by the guest. Keys written below them afterwards inherit that.
    ///
    /// OCaml: the `Xs.mkdir` + `Xs.setperms` pairs of `Blkback.create` / `Conback.create`
    public func createDevicePair(
        frontend: String, owner frontendDomain: DomainID, backend: String, owner backendDomain: DomainID
    ) async throws {
        try await write([(frontend, ""), (backend, "")])
        try await setPermissions(frontend, owner: frontendDomain, readers: [backendDomain])
        try await setPermissions(backend, owner: backendDomain, readers: [frontendDomain])
    }

    /// The xenbus state at `dir/state`; nil when absent, `.unknown` when unparsable.
    ///
    /// OCaml: `Device_state.of_string` on `Xs.read (dir ^ "/state")`
    public func state(of dir: String) async throws -> XenbusState? {
        guard let text = try await read(dir + "/state") else { return nil }
        return XenbusState(xenstoreValue: text) ?? .unknown
    }

    /// Waits until `dir/state` satisfies `accept` (or disappears, when `orGone`), returning it (nil: gone).
    ///
    /// OCaml: `Xs.wait` on a state key (as `Blkfront.plug` and `Blkback.run` do)
    public func waitForState(
        of dir: String, orGone: Bool = false, _ accept: @escaping @Sendable (XenbusState) -> Bool
    ) async throws -> XenbusState? {
        let result: XenbusState?? = try await wait(watching: [dir + "/state"]) {
            let state = try await self.state(of: dir)
            guard let state else { return orGone ? .some(nil) : nil }
            return accept(state) ? .some(state) : nil
        }
        return result ?? nil
    }
}
