public import XenCore
public import XenStoreProtocol

/// One task's access to xenstore, given to the closures of `immediate`, `transaction` and `wait`: inside a
/// transaction every operation carries its transaction id; inside `wait` the paths read are recorded so
/// that exactly those are watched. Relative paths are relative to the connection's domain home
/// (`/local/domain/<domid>`). Every operation throws a typed `XenStoreError` carrying the path and operation.
///
/// OCaml: `Xs_client_lwt.S.handle` (`Xs_handle.t`)
public struct XenStoreHandle: Sendable {
    let client: XenStoreClient
    /// The transaction this handle works in; 0 outside a transaction. OCaml: `Xs_handle.get_tid`
    public let transactionID: UInt32
    let recorder: AccessRecorder?

    init(client: XenStoreClient, transactionID: UInt32, recorder: AccessRecorder?) {
        self.client = client
        self.transactionID = transactionID
        self.recorder = recorder
    }

    private func call(
        _ op: XenStoreMessageType, _ path: String, _ strings: [String], value: [UInt8]? = nil
    ) async throws(XenStoreError) -> [UInt8] {
        var payload = try WirePayload.checkedStrings(strings, path: path, op: op)
        if let value { payload += value }
        return try await client.call(op, transaction: transactionID, path: path, payload: payload)
    }

    private func expectOK(_ op: XenStoreMessageType, _ path: String, _ reply: [UInt8]) throws(XenStoreError) {
        guard reply.starts(with: [0x4F, 0x4B]) else {  // "OK"
            throw .malformedReply(path: path, op: op, reason: "expected OK")
        }
    }

    // MARK: - Nodes

    /// The names of `path`'s children. A directory too big for one reply (`E2BIG`) is read in parts with
    /// `DIRECTORY_PART`, restarting when the node's generation changes between parts.
    ///
    /// OCaml: `Xs_client_lwt.S.directory`
    public func directory(_ path: String) async throws(XenStoreError) -> [String] {
        recorder?.record(path)
        do throws(XenStoreError) {
            return WirePayload.strings(try await call(.directory, path, [path]))
        } catch {
            guard case .tooBig = error else { throw error }
            return try await directoryInParts(path)
        }
    }

    private func directoryInParts(_ path: String) async throws(XenStoreError) -> [String] {
        let maximumBytes = 64 << 20
        for _ in 0..<16 {
            var generation: [UInt8]?
            var children: [UInt8] = []
            var restart = false
            while true {
                let reply = try await call(.directoryPart, path, [path, String(children.count)])
                guard let nul = reply.firstIndex(of: 0) else {
                    throw .malformedReply(path: path, op: .directoryPart, reason: "no generation count")
                }
                let chunkGeneration = Array(reply[..<nul])
                let chunk = reply[(nul + 1)...]
                if let generation, generation != chunkGeneration {
                    restart = true
                    break
                }
                generation = chunkGeneration
                guard !chunk.isEmpty else {
                    throw .malformedReply(path: path, op: .directoryPart, reason: "empty part")
                }
                // The last part ends with an extra NUL: "\0" alone, or "...\0\0".
                if chunk.count == 1 || chunk.suffix(2).elementsEqual([0, 0]) {
                    children += chunk.dropLast()
                    break
                }
                children += chunk
                guard children.count <= maximumBytes else {
                    throw .malformedReply(path: path, op: .directoryPart, reason: "listing never ends")
                }
            }
            if !restart { return WirePayload.strings(children) }
        }
        throw .eagain(path: path, op: .directoryPart)
    }

    /// The value of `path` (as UTF-8 text; see `readBytes` for binary values).
    ///
    /// OCaml: `Xs_client_lwt.S.read`
    public func read(_ path: String) async throws(XenStoreError) -> String {
        String(decoding: try await readBytes(path), as: UTF8.self)
    }

    /// The raw value of `path` (values are bytes; the reply carries no trailing NUL).
    ///
    /// OCaml: none (`read` returns the bytes as an OCaml string)
    public func readBytes(_ path: String) async throws(XenStoreError) -> [UInt8] {
        recorder?.record(path)
        return try await call(.read, path, [path])
    }

    /// True if `path` exists (a `READ` that does not fail with `ENOENT`).
    ///
    /// OCaml: none (xenstore-utils' `xenstore-exists`)
    public func exists(_ path: String) async throws(XenStoreError) -> Bool {
        do throws(XenStoreError) {
            _ = try await readBytes(path)
            return true
        } catch {
            guard case .noEntry = error else { throw error }
            return false
        }
    }

    /// Writes `value` at `path`, creating missing parents with empty values.
    ///
    /// OCaml: `Xs_client_lwt.S.write`
    public func write(_ path: String, _ value: String) async throws(XenStoreError) {
        try await write(path, bytes: Array(value.utf8))
    }

    /// Writes raw bytes at `path` (NULs allowed: the value is the rest of the payload).
    ///
    /// OCaml: `Xs_client_lwt.S.write` (an OCaml string is bytes)
    public func write(_ path: String, bytes: [UInt8]) async throws(XenStoreError) {
        try expectOK(.write, path, try await call(.write, path, [path], value: bytes))
    }

    /// Removes `path` and everything below it; succeeds if it is already absent (its parent must exist).
    ///
    /// OCaml: `Xs_client_lwt.S.rm`
    public func remove(_ path: String) async throws(XenStoreError) {
        try expectOK(.rm, path, try await call(.rm, path, [path]))
    }

    /// Creates `path` with an empty value (a xenstore "directory"); an existing node is left unchanged.
    ///
    /// OCaml: `Xs_client_lwt.S.mkdir`
    public func createDirectory(_ path: String) async throws(XenStoreError) {
        try expectOK(.mkdir, path, try await call(.mkdir, path, [path]))
    }

    // MARK: - Permissions

    /// Sets `path`'s permissions to `permissions`.
    ///
    /// OCaml: `Xs_client_lwt.S.setperms`
    public func setPermissions(_ path: String, to permissions: XenStorePermissions) async throws(XenStoreError) {
        try expectOK(.setPermissions, path, try await call(.setPermissions, path, [path] + permissions.strings))
    }

    /// `path`'s permissions.
    ///
    /// OCaml: `Xs_protocol.Request.getperms` (not in `Xs_client_lwt.S`; libxenstore `xs_get_permissions`)
    public func permissions(of path: String) async throws(XenStoreError) -> XenStorePermissions {
        recorder?.record(path)
        let strings = WirePayload.strings(try await call(.getPermissions, path, [path]))
        guard let permissions = XenStorePermissions(strings: strings) else {
            throw .malformedReply(path: path, op: .getPermissions, reason: "permissions \(strings)")
        }
        return permissions
    }

    // MARK: - Watches

    /// Registers a manual watch on `path` with `token` (events: `XenStoreClient.events(token:)`). Manual
    /// watches survive `suspend`/`resume`: the client re-registers them.
    ///
    /// OCaml: `Xs_client_lwt.S.watch`
    public func watch(_ path: String, token: String) async throws(XenStoreError) {
        try await client.sendWatch(path, token: token, transaction: transactionID)
        client.state.withLock { state in
            let watch = MultiplexerState.ManualWatch(path: path, token: token)
            if !state.manualWatches.contains(watch) { state.manualWatches.append(watch) }
        }
    }

    /// Removes the manual watch on `path` with `token`.
    ///
    /// OCaml: `Xs_client_lwt.S.unwatch`
    public func unwatch(_ path: String, token: String) async throws(XenStoreError) {
        client.state.withLock { $0.manualWatches.removeAll { $0 == .init(path: path, token: token) } }
        try await client.sendUnwatch(path, token: token, transaction: transactionID)
    }

    /// Removes every watch (and transaction) of this connection, including the client's own, so running
    /// `wait`s and `watches` sequences stop receiving events. The manual-watch list is cleared.
    ///
    /// OCaml: none (libxenstore `xs_reset_watches`)
    public func resetWatches() async throws(XenStoreError) {
        client.state.withLock { $0.manualWatches.removeAll() }
        try expectOK(.resetWatches, "", try await call(.resetWatches, "", [""]))
    }

    // MARK: - Domains and control

    /// Runs a debug (`XS_CONTROL`) command and returns its reply strings.
    ///
    /// OCaml: `Xs_client_lwt.S.debug`
    public func debug(_ arguments: [String]) async throws(XenStoreError) -> [String] {
        WirePayload.strings(try await call(.control, arguments.first ?? "", arguments))
    }

    /// Asks to restrict this connection to `domain`'s privileges. `XS_RESTRICT` (type 20) was removed from
    /// Xen in 4.9, so current servers answer with an error, thrown as is (C xenstored and `XenStoreServer`:
    /// `.notSupported` for `ENOSYS`, or `.invalid` for `EINVAL`); the call is kept for seed compatibility.
    ///
    /// OCaml: `Xs_client_lwt.S.restrict` (dropped from ocaml-xenstore together with the wire op)
    public func restrict(_ domain: DomainID) async throws(XenStoreError) {
        let op = XenStoreMessageType(rawValue: 20)
        try expectOK(op, "", try await call(op, "", [String(domain.rawValue)]))
    }

    /// The home path of `domain` (`/local/domain/<domid>`).
    ///
    /// OCaml: `Xs_client_lwt.S.getdomainpath`
    public func domainPath(of domain: DomainID) async throws(XenStoreError) -> String {
        let path = String(domain.rawValue)
        guard let home = WirePayload.strings(try await call(.getDomainPath, path, [path])).first else {
            throw .malformedReply(path: path, op: .getDomainPath, reason: "empty reply")
        }
        return home
    }

    /// Tells the daemon about a new domain's xenstore ring (frame `frame`, event channel `port`).
    ///
    /// OCaml: `Xs_client_lwt.S.introduce`
    public func introduce(_ domain: DomainID, frame: Int, port: EventChannelPort) async throws(XenStoreError) {
        let path = String(domain.rawValue)
        try expectOK(.introduce, path, try await call(.introduce, path, [path, String(frame), String(port.rawValue)]))
    }

    /// Makes `stubdomain` act with `target`'s permissions (device-model stub domains).
    ///
    /// OCaml: `Xs_client_lwt.S.set_target`
    public func setTarget(_ stubdomain: DomainID, target: DomainID) async throws(XenStoreError) {
        let path = String(stubdomain.rawValue)
        try expectOK(.setTarget, path, try await call(.setTarget, path, [path, String(target.rawValue)]))
    }

    /// True if `domain` has been introduced.
    ///
    /// OCaml: `Xs_protocol.Request.isintroduced` (not in `Xs_client_lwt.S`; libxenstore `xs_is_domain_introduced`)
    public func isDomainIntroduced(_ domain: DomainID) async throws(XenStoreError) -> Bool {
        let path = String(domain.rawValue)
        switch WirePayload.strings(try await call(.isDomainIntroduced, path, [path])).first {
        case "T": return true
        case "F": return false
        case let other: throw .malformedReply(path: path, op: .isDomainIntroduced, reason: "\(other ?? "")")
        }
    }

    /// Makes the daemon forget `domain` (fires `@releaseDomain`).
    ///
    /// OCaml: `Xs_protocol.Request.release` (not in `Xs_client_lwt.S`; libxenstore `xs_release_domain`)
    public func release(_ domain: DomainID) async throws(XenStoreError) {
        let path = String(domain.rawValue)
        try expectOK(.release, path, try await call(.release, path, [path]))
    }

    // MARK: - Transactions

    /// Ends this handle's transaction: commit (`T`) or abort (`F`).
    func endTransaction(commit: Bool) async throws(XenStoreError) {
        try expectOK(.transactionEnd, "", try await call(.transactionEnd, "", [commit ? "T" : "F"]))
    }
}
