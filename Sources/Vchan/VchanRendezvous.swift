public import XenCore
public import XenStoreClient

/// The xenstore side of a vchan: a server publishes its shared page's grant reference and its unbound port
/// under one directory, readable by the client only; the client waits for both and parses them as values
/// from an untrusted domain.
///
/// OCaml: `Vchan.Xenstore.Make` (`write`, `read`, `delete`); C: `init_xs_srv`, `libxenvchan_client_init`,
/// `close_xs_srv`
public enum VchanRendezvous {
    /// The grant reference of the shared page.
    public static let ringRefKey = "ring-ref"
    /// The server's unbound port.
    public static let eventChannelKey = "event-channel"

    /// `<serverDomainPath>/data/vchan/<client>/<port>`, the directory both sides agree on.
    ///
    /// OCaml: the `xs_path` built in `Vchan.Xenstore.Make.write`/`read`
    public static func path(serverDomainPath: String, client: DomainID, port: VchanPort) -> String {
        "\(serverDomainPath)/data/vchan/\(client.rawValue)/\(port.rawValue)"
    }

    /// The rendezvous directory for `port` between `server` and `client`: the explicit one, else the
    /// convention under the server's domain path (`GET_DOMAIN_PATH`).
    static func resolvePath(
        _ explicit: String?, xenstore: XenStoreClient, server: DomainID, client: DomainID, port: VchanPort
    ) async throws(VchanError) -> String {
        if let explicit { return explicit }
        do throws(XenStoreError) {
            let home = try await xenstore.immediate { handle throws(XenStoreError) in
                try await handle.domainPath(of: server)
            }
            return path(serverDomainPath: home, client: client, port: port)
        } catch {
            throw .xenstore(op: "get_domain_path", path: "\(server)", underlying: error)
        }
    }

    /// Writes `ring-ref` and `event-channel` under `path` in one transaction, each owned by `server` with no
    /// access for others and read access for `client`.
    ///
    /// OCaml: `Vchan.Xenstore.Make.write`; C: `init_xs_srv`
    public static func publish(
        xenstore: XenStoreClient, path: String, server: DomainID, client: DomainID, ringRef: GrantRef,
        port: EventChannelPort
    ) async throws(VchanError) {
        let permissions = XenStorePermissions(owner: server, others: .none, acl: [XenStorePermission(.read, client)])
        let entries = [(ringRefKey, ringRef.rawValue), (eventChannelKey, port.rawValue)]
        do {
            try await xenstore.transaction { handle in
                for (key, value) in entries {
                    try await handle.write("\(path)/\(key)", String(value))
                    try await handle.setPermissions("\(path)/\(key)", to: permissions)
                }
            }
        } catch let error as XenStoreError {
            throw .xenstore(op: "transaction", path: path, underlying: error)
        } catch {
            throw .cancelled
        }
    }

    /// Waits until both entries exist under `path` and are readable (at most `timeout`) and parses them: a
    /// non-zero decimal grant reference and port, as libxenvchan accepts.
    ///
    /// OCaml: `Vchan.Xenstore.Make.read` (`Xs.wait`, retrying on any error); C: the reads in
    /// `libxenvchan_client_init`
    public static func lookup(
        xenstore: XenStoreClient, path: String, timeout: Duration?
    ) async throws(VchanError) -> (ringRef: GrantRef, port: EventChannelPort) {
        let (refText, portText) = try await withDeadline(timeout, "xenstore entries under \(path)") {
            () async throws(VchanError) -> (String, String) in
            do {
                return try await xenstore.wait { handle in
                    do throws(XenStoreError) {
                        return (
                            try await handle.read("\(path)/\(ringRefKey)"),
                            try await handle.read("\(path)/\(eventChannelKey)")
                        )
                    } catch .noEntry, .accessDenied {
                        // Not there yet, or not readable yet: xenstored answers EACCES for a missing node
                        // under a directory we may not read, and the server sets our permission last.
                        throw XenStoreError.again
                    }
                }
            } catch let error as XenStoreError {
                throw .xenstore(op: "wait", path: path, underlying: error)
            } catch {
                throw .cancelled
            }
        }
        guard let ref = parseNonZero(refText) else {
            throw .invalidValue(path: "\(path)/\(ringRefKey)", value: refText)
        }
        guard let port = parseNonZero(portText) else {
            throw .invalidValue(path: "\(path)/\(eventChannelKey)", value: portText)
        }
        return (GrantRef(ref), EventChannelPort(port))
    }

    /// Removes `path`, then its parent (`.../<client>`) if that is left empty.
    ///
    /// OCaml: `Vchan.Xenstore.Make.delete` (one transaction; two steps here, because XenStoreServer counts
    /// listing a directory the same transaction removed a child from as a conflict, forever); C:
    /// `close_xs_srv` (which removes `path` only)
    public static func withdraw(xenstore: XenStoreClient, path: String) async {
        let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        try? await xenstore.immediate { handle throws(XenStoreError) in try await handle.remove(path) }
        guard !parent.isEmpty else { return }
        try? await xenstore.transaction { handle in
            if try await handle.directory(parent).isEmpty { try await handle.remove(parent) }
        }
    }

    /// A decimal number in 1...UInt32.max with nothing else around it (no sign, no spaces, no NUL).
    static func parseNonZero(_ text: String) -> UInt32? {
        guard !text.isEmpty, text.utf8.count <= 10, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            let value = UInt32(text), value != 0
        else { return nil }
        return value
    }
}
