import EventChannel
import GrantTable
public import XenCore

/// The client end of a vchan: finds the server's entries in xenstore, binds to its port, maps its pages
/// (gnttab), validates what the server wrote there, and announces itself.
///
/// OCaml: `Vchan.Endpoint.client`; C: `libxenvchan_client_init`
public enum VchanClient {
    /// Connects to the vchan `server` published for this domain under `port`, waiting for its xenstore
    /// entries (at most `options.connectTimeout`). Ring orders outside 10...20 or overlapping in the page,
    /// unparsable entries and impossible indices are typed errors.
    ///
    /// OCaml: `Vchan.Endpoint.client ~domid ~port`
    public static func connect(
        domain server: DomainID, port: VchanPort, environment: VchanEnvironment,
        options: VchanOptions = VchanOptions()
    ) async throws(VchanError) -> VchanConnection {
        let grantTable = try environment.requireGrantTable()
        let local = try await environment.resolveLocalDomain()
        let xenstore = environment.xenstore
        let path = try await VchanRendezvous.resolvePath(
            options.xenstorePath, xenstore: xenstore, server: server, client: local, port: port)
        let (ringRef, remotePort) = try await VchanRendezvous.lookup(
            xenstore: xenstore, path: path, timeout: options.connectTimeout)
        let events = environment.eventChannel
        let localPort: EventChannelPort
        do throws(EventChannelError) {
            localPort = try events.bindInterdomain(remote: server, remotePort: remotePort)
        } catch {
            throw .eventChannel(op: "bind_interdomain dom\(server) port \(remotePort)", underlying: error)
        }
        var mappings: [GrantMappingHandle] = []
        let connection: VchanConnection
        do throws(VchanError) {
            // The kernel clears cli_live and signals the port if this process dies with the page mapped.
            let notify = UnmapNotification(byteOffset: VchanLayout.clientLiveOffset, port: localPort)
            let control = try map(op: "map_grant_ref_notify \(ringRef)") { () throws(GrantTableError) in
                try grantTable.map(domain: server, ref: ringRef, writable: true, notify: notify)
            }
            mappings.append(control)
            // Orders and grants are read once here; later changes by the server are ignored.
            let page = VchanControlPage(page: control.buffer, role: .client)
            let sizes = try page.ringSizes()
            let grants = page.grants(for: sizes)
            // Left is ours to write, right only to read.
            for (refs, writable) in [(grants.left, true), (grants.right, false)] where !refs.isEmpty {
                mappings.append(
                    try map(op: "map_grant_refs \(refs.count)") { () throws(GrantTableError) in
                        try grantTable.mapv(domain: server, refs: refs, writable: writable)
                    })
            }
            connection = try build(
                control: control, rings: Array(mappings.dropFirst()), sizes: sizes, server: server, port: port,
                path: path, ringRef: ringRef, localPort: localPort, environment: environment, options: options)
        } catch {
            for handle in mappings.reversed() { try? handle.unmap() }
            try? events.unbind(localPort)
            throw error
        }
        connection.start(xenstore: xenstore, localDomain: local)
        connection.announce()
        return connection
    }

    /// Wraps the rings: every view made here moves into the connection (or dies with this frame).
    private static func build(
        control: GrantMappingHandle, rings: [GrantMappingHandle], sizes: VchanRingSizes, server: DomainID,
        port: VchanPort, path: String, ringRef: GrantRef, localPort: EventChannelPort,
        environment: VchanEnvironment, options: VchanOptions
    ) throws(VchanError) -> VchanConnection {
        let endpoint = VchanConnection.Endpoint(
            role: .client, peer: server, port: port, sizes: sizes, path: path, ringRef: ringRef, localPort: localPort)
        return try VchanConnection.assemble(
            endpoint, page: control.buffer, externalRings: rings.map(\.buffer),
            resources: VchanResources(control: .mapped(control), rings: rings.map { .mapped($0) }, withdraw: nil),
            eventChannel: environment.eventChannel, options: options)
    }

    private static func map(
        op: String, _ body: () throws(GrantTableError) -> GrantMapping
    ) throws(VchanError) -> GrantMappingHandle {
        do throws(GrantTableError) { return GrantMappingHandle(try body()) } catch {
            throw .grant(op: op, underlying: error)
        }
    }
}

extension VchanConnection {
    /// Client: `cli_live = 1`, ask the server to signal its writes, and wake it.
    ///
    /// OCaml: the end of `Vchan.Endpoint.client`; C: the end of `libxenvchan_client_init`
    func announce() {
        inbound.withLock { half in
            half.ring?.control.setOwnState(.connected)
            half.ring?.control.setPeerRequests(VchanLayout.notifyWrite)
        }
        notifyPeer()
    }
}
