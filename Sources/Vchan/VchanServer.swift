import EventChannel
import GrantTable
public import XenCore

/// The server end of a vchan: shares the pages (gntshr), allocates an unbound port, publishes both in
/// xenstore for one client domain and waits for it.
///
/// OCaml: `Vchan.Endpoint.server`; C: `libxenvchan_server_init`
public enum VchanServer {
    /// Publishes a vchan for `client` under `port` with rings of at least `readSize` (client→server) and
    /// `writeSize` bytes (server→client), up to 1 MiB each, then waits for the client (at most
    /// `options.connectTimeout`).
    ///
    /// OCaml: `Vchan.Endpoint.server ~domid ~port ~read_size ~write_size`
    public static func listen(
        domain client: DomainID, port: VchanPort, readSize: Int = 1024, writeSize: Int = 2048,
        environment: VchanEnvironment, options: VchanOptions = VchanOptions()
    ) async throws(VchanError) -> VchanConnection {
        let connection = try await publish(
            domain: client, port: port, readSize: readSize, writeSize: writeSize, environment: environment,
            options: options)
        do {
            try await connection.waitForPeer(timeout: options.connectTimeout)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Publishes the vchan and returns at once, before the client connects: reads wait for it, writes fill
    /// the ring; ``VchanConnection/waitForPeer(timeout:)`` waits for it.
    ///
    /// OCaml: the first half of `Vchan.Endpoint.server`; C: `libxenvchan_server_init`
    public static func publish(
        domain client: DomainID, port: VchanPort, readSize: Int = 1024, writeSize: Int = 2048,
        environment: VchanEnvironment, options: VchanOptions = VchanOptions()
    ) async throws(VchanError) -> VchanConnection {
        let gntshr = try environment.requireGntshr()
        let sizes = try VchanRingSizes.server(readMinimum: readSize, writeMinimum: writeSize)
        let local = try await environment.resolveLocalDomain()
        let xenstore = environment.xenstore
        let path = try await VchanRendezvous.resolvePath(
            options.xenstorePath, xenstore: xenstore, server: local, client: client, port: port)
        let events = environment.eventChannel
        let localPort: EventChannelPort
        do throws(EventChannelError) { localPort = try events.bindUnboundPort(remote: client) } catch {
            throw .eventChannel(op: "bind_unbound_port dom\(client)", underlying: error)
        }
        var shares: [SharedPagesHandle] = []
        let connection: VchanConnection
        do throws(VchanError) {
            // The kernel clears srv_live and signals the port if this process dies with the page shared.
            let notify = UnmapNotification(byteOffset: VchanLayout.serverLiveOffset, port: localPort)
            let control = try share(op: "share_page_notify") {
                () throws(GrantTableError) in try gntshr.sharePage(with: client, writable: true, notify: notify)
            }
            shares.append(control)
            for location in [sizes.left, sizes.right] where location.pageCount > 0 {
                shares.append(
                    try share(op: "share_pages \(location.pageCount)") { () throws(GrantTableError) in
                        try gntshr.sharePages(with: client, count: location.pageCount, writable: true)
                    })
            }
            connection = try build(
                control: control, rings: Array(shares.dropFirst()), sizes: sizes, client: client, port: port,
                path: path, localPort: localPort, environment: environment, options: options)
        } catch {
            // No view of the pages is left here: release them, then the port.
            for handle in shares.reversed() { try? handle.unshare() }
            try? events.unbind(localPort)
            throw error
        }
        connection.start(xenstore: xenstore, localDomain: local)
        do {
            try await VchanRendezvous.publish(
                xenstore: xenstore, path: path, server: local, client: client, ringRef: connection.ringRef,
                port: localPort)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Fills the page and wraps the rings: every view made here moves into the connection (or dies with
    /// this frame when it throws).
    private static func build(
        control: SharedPagesHandle, rings: [SharedPagesHandle], sizes: VchanRingSizes, client: DomainID,
        port: VchanPort, path: String, localPort: EventChannelPort, environment: VchanEnvironment,
        options: VchanOptions
    ) throws(VchanError) -> VchanConnection {
        VchanControlPage.initialiseServerPage(control.buffer, sizes: sizes, grants: rings.flatMap(\.refs))
        let endpoint = VchanConnection.Endpoint(
            role: .server, peer: client, port: port, sizes: sizes, path: path, ringRef: control.refs[0],
            localPort: localPort)
        return try VchanConnection.assemble(
            endpoint, page: control.buffer, externalRings: rings.map(\.buffer),
            resources: VchanResources(
                control: .shared(control), rings: rings.map { .shared($0) }, withdraw: (environment.xenstore, path)),
            eventChannel: environment.eventChannel, options: options)
    }

    private static func share(
        op: String, _ body: () throws(GrantTableError) -> SharedPages
    ) throws(VchanError) -> SharedPagesHandle {
        do throws(GrantTableError) { return SharedPagesHandle(try body()) } catch {
            throw .grant(op: op, underlying: error)
        }
    }
}

extension VchanConnection {
    /// Server: waits until the client has connected (its live byte leaves "waiting"), at most `timeout`.
    /// Returns too when the client came and already went (reads then end with `.peerClosed`).
    ///
    /// OCaml: the wait loop at the end of `Vchan.Endpoint.server`; `vchan-socket-proxy`'s
    /// `while (libxenvchan_is_open(ctrl) != 1) libxenvchan_wait(ctrl)`
    public func waitForPeer(timeout: Duration? = nil) async throws(VchanError) {
        try await withDeadline(timeout, "vchan client on \(xenstorePath)") { [self] () async throws(VchanError) in
            while true {
                let seen = gate.generation
                if try peerState() != .waitingForConnection { return }
                await gate.wait(after: seen)
                if Task.isCancelled { throw .cancelled }
            }
        }
    }
}
