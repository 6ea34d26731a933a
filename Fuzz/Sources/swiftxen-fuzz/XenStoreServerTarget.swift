import XenCore
import XenStoreProtocol

@testable import XenStoreServer

/// XenStoreServer as guests drive it: two connections of domain 5 and one of domain 6 (both unprivileged)
/// send any sequence of requests (or raw bytes, or hang up) to a store dom0 set up as a toolstack does. After
/// every request the server's own consistency check must pass and every quota must bound what the guests own,
/// in the live store and in each open transaction's view; every reply must decode.
///
/// Input, repeated: a selector byte (bits 0-1: connection; bit 6: hang up and reconnect; bit 7: send the
/// payload as raw bytes), a message type byte, a transaction id byte, a length byte, the payload.
enum XenStoreServerTarget {
    static let quotas = XenStoreQuotas(
        nodesPerDomain: 24, nodeSize: 256, watchesPerConnection: 8, transactionsPerConnection: 3,
        permissionsPerNode: 5)

    struct NullSink: XenStoreConnectionSink {
        func enqueue(_ bytes: [UInt8]) -> (@Sendable () -> Void)? { nil }
        func close() -> (@Sendable () -> Void)? { nil }
    }

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        var state = toolstackStore()
        let domains: [DomainID] = [5, 5, 6, 5]
        var connections = domains.map { state.addConnection(domain: $0, sink: NullSink()) }
        var requestID: UInt32 = 1
        while !input.isEmpty {
            let selector = input.byte()
            let slot = Int(selector & 3)
            let type = XenStoreMessageType(rawValue: UInt32(input.byte() % 32))
            let tid = UInt32(input.byte() % 8)
            let payload = input.blob()
            if selector & 0x40 != 0 {
                _ = state.removeConnection(connections[slot])
                connections[slot] = state.addConnection(domain: domains[slot], sink: NullSink())
            }
            if selector & 0x80 != 0 {
                state.receive(payload, from: connections[slot])
            } else {
                let packet = XenStorePacket(type: type, requestID: requestID, transactionID: tid, payload: payload)
                state.receive(packet.bytes, from: connections[slot])
            }
            requestID &+= 1
            for id in state.closing { _ = state.removeConnection(id) }
            state.closing.removeAll()
            check(&state, complete: false)
        }
        check(&state, complete: true)
    }

    /// dom0's set-up: two introduced guests with their homes, a backend directory domain 5 may write, a node
    /// domain 5 may only read, and one nobody else may see.
    static func toolstackStore() -> XenStoreState {
        var state = XenStoreState(quotas: quotas)
        let dom0 = state.addConnection(domain: .dom0, sink: NullSink())
        let backend = "/local/domain/0/backend/vbd/5/51712"
        let requests: [XenStoreRequest] = [
            .introduce(domain: 5, gfn: 1, port: 1), .introduce(domain: 6, gfn: 2, port: 2),
            .mkdir(path: "/local/domain/5"),
            .setPermissions(path: "/local/domain/5", permissions: XenStorePermissions(owner: 5)),
            .mkdir(path: "/local/domain/6"),
            .setPermissions(
                path: "/local/domain/6", permissions: XenStorePermissions(owner: 6, acl: [.init(.read, 5)])),
            .write(path: backend + "/state", value: Array("1".utf8)),
            .setPermissions(path: backend, permissions: XenStorePermissions(owner: 0, acl: [.init(.both, 5)])),
            .write(path: "/tool/secret", value: Array("s".utf8)),
        ]
        for request in requests { state.process(request.packet(requestID: 0), from: dom0, domain: .dom0) }
        _ = state.removeConnection(dom0)
        state.outbox.removeAll()
        check(&state, complete: true)
        return state
    }

    /// The invariants after a request: the live store's quotas always; its `CONTROL check` and each open
    /// transaction's view (dearer) when `complete` (at the end of the input).
    static func check(_ state: inout XenStoreState, complete: Bool) {
        checkQuotas(state.tree, "live store")
        if complete { checkTree(state.tree, "live store") }
        for (id, connection) in state.connections {
            require(
                connection.watches.count <= quotas.watchesPerConnection, "\(id) has \(connection.watches.count) watches"
            )
            require(
                connection.transactions.count <= quotas.transactionsPerConnection,
                "\(id) has \(connection.transactions.count) transactions")
            guard complete else { continue }
            for (tid, transaction) in connection.transactions {
                checkTree(transaction.tree, "transaction \(tid) of \(id)")
            }
        }
        for (id, bytes) in state.outbox {
            var parser = XenStorePacketParser()
            parser.append(bytes)
            while true {
                let packet: XenStorePacket?
                do { packet = try parser.next() } catch {
                    require(false, "reply to \(id) does not parse: \(error)")
                    return
                }
                guard let packet else { break }
                require((try? XenStoreReply(decoding: packet)) != nil, "reply \(packet) to \(id) does not decode")
            }
            require(parser.bufferedByteCount == 0, "partial reply to \(id)")
        }
        state.outbox.removeAll()
    }

    static func checkTree(_ tree: XenStoreTree, _ name: String) {
        let problems = tree.check()
        require(problems.isEmpty, "\(name): CONTROL check: \(problems)")
        checkQuotas(tree, name)
    }

    /// What the quotas promise: no unprivileged domain owns more nodes than its quota, no record reaches the
    /// node-size quota (dom0's set-up writes only small ones).
    static func checkQuotas(_ tree: XenStoreTree, _ name: String) {
        for (domain, count) in tree.ownedNodes where domain != .dom0 {
            require(
                count <= quotas.nodesPerDomain,
                "\(name): domain \(domain) owns \(count) nodes, quota \(quotas.nodesPerDomain)")
        }
        for (path, node) in tree.nodes {
            require(
                node.recordSize < quotas.nodeSize,
                "\(name): \(path) takes \(node.recordSize) bytes, quota \(quotas.nodeSize)")
        }
    }
}
