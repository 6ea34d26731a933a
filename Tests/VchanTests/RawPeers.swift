import EventChannel
import GrantTable
import SimulatedHypervisor
import Vchan
import XenCore
import XenStoreClient

/// A hand-driven client: maps what a server published and moves bytes with the pure rings only, so a test
/// decides when (and whether) it signals, what it writes into the shared page, and how it dies.
final class RawClient: @unchecked Sendable {
    // @unchecked: used by one test task at a time.
    let domain: SimulatedDomain
    let server: DomainID
    let port: EventChannelPort
    var mappings: [GrantMappingHandle]
    var send: VchanSendRing?
    var receive: VchanReceiveRing?
    var page: PageBuffer?

    /// Maps `published` (a server's connection object, only read for its ref and port) as `domain` would.
    init(domain: SimulatedDomain, published: VchanConnection, armNotify: Bool = true) throws {
        self.domain = domain
        let serverID = try Self.serverDomain(of: published, client: domain)
        server = serverID
        port = try domain.eventChannel.bindInterdomain(remote: serverID, remotePort: published.localPort)
        let notify = UnmapNotification(
            byteOffset: armNotify ? VchanLayout.clientLiveOffset : nil, port: armNotify ? port : nil)
        let control = GrantMappingHandle(
            try domain.grantTable.map(domain: serverID, ref: published.ringRef, writable: true, notify: notify))
        let controlPage = VchanControlPage(page: control.buffer, role: .client)
        let sizes = try controlPage.ringSizes()
        let grants = controlPage.grants(for: sizes)
        var mappings = [control]
        func data(_ location: VchanRingLocation, _ refs: [GrantRef], _ size: Int) throws -> PageBuffer {
            switch location {
            case .inPage(let offset): return control.buffer.slice(from: offset, count: size)
            case .external:
                let mapping = GrantMappingHandle(
                    try domain.grantTable.mapv(domain: serverID, refs: refs, writable: true))
                mappings.append(mapping)
                return mapping.buffer.slice(from: 0, count: size)
            }
        }
        let left = try data(sizes.left, grants.left, sizes.leftSize)
        let right = try data(sizes.right, grants.right, sizes.rightSize)
        self.mappings = mappings
        page = control.buffer
        send = try VchanSendRing(control: controlPage, data: left)
        receive = try VchanReceiveRing(control: controlPage, data: right)
    }

    private static func serverDomain(of published: VchanConnection, client: SimulatedDomain) throws -> DomainID {
        // The server's domain is the one whose xenstore path holds the entries: /local/domain/<id>/...
        let parts = published.xenstorePath.split(separator: "/")
        guard parts.count > 2, let raw = UInt16(parts[2]) else { throw Timeout(description: "bad path") }
        return DomainID(raw)
    }

    /// `cli_live = 1`, optionally with the event libxenvchan sends.
    func announce(signal: Bool = true) throws {
        page?.setUInt8(VchanLiveState.connected.rawValue, at: VchanLayout.clientLiveOffset)
        if signal { try self.signal() }
    }

    func signal() throws { try domain.eventChannel.notify(port) }

    /// Writes without ever signalling (ignores the server's requests).
    func writeSilently(_ bytes: [UInt8]) throws -> Int {
        try bytes.withUnsafeBytes { raw in try send!.write(raw).count }
    }

    /// What this process's death looks like: the mappings go (firing the armed unmap notification), the
    /// port stays bound and nobody writes `cli_live`.
    func die() {
        send = nil
        receive = nil
        page = nil
        for mapping in mappings.reversed() { try? mapping.unmap() }
        mappings = []
    }
}

/// A hand-built server: a shared page filled by the test (orders, grants, indices of its choosing) and
/// xenstore entries with whatever text the test wants.
final class RawServer: @unchecked Sendable {
    // @unchecked: used by one test task at a time.
    let domain: SimulatedDomain
    let share: SharedPagesHandle
    let port: EventChannelPort

    init(domain: SimulatedDomain, client: DomainID, armNotify: Bool = true) throws {
        self.domain = domain
        port = try domain.eventChannel.bindUnboundPort(remote: client)
        let notify = UnmapNotification(byteOffset: armNotify ? VchanLayout.serverLiveOffset : nil, port: port)
        share = SharedPagesHandle(try domain.openGntshr().sharePage(with: client, writable: true, notify: notify))
    }

    var page: PageBuffer { share.buffer }

    /// Publishes `ringRef`/`eventChannel` text (the real values unless overridden) for `client` under `port`.
    func publish(
        rig: VchanRig, client: DomainID, port name: String, ringRef: String? = nil, eventChannel: String? = nil
    ) async throws {
        let path = "/local/domain/\(domain.id.rawValue)/data/vchan/\(client.rawValue)/\(name)"
        let store = XenStoreClient(transport: rig.store.connect(domain: domain.id))
        let ref = ringRef ?? "\(share.refs[0].rawValue)"
        let channel = eventChannel ?? "\(port.rawValue)"
        try await store.transaction { handle in
            try await handle.write("\(path)/ring-ref", ref)
            try await handle.write("\(path)/event-channel", channel)
            for key in ["ring-ref", "event-channel"] {
                try await handle.setPermissions(
                    "\(path)/\(key)", to: XenStorePermissions(owner: self.domain.id, acl: [.init(.read, client)]))
            }
        }
    }
}
