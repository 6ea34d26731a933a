import XenCore
import XenStoreProtocol

/// An error answer: the `XS_ERROR` name an operation ends with.
struct StoreFailure: Error {
    var name: XenStoreErrorName
    init(_ name: XenStoreErrorName) { self.name = name }
}

/// Where bytes for one connection go. `enqueue` is called with the server lock held, in the order the
/// server produced the bytes; whatever it returns runs after the lock is released (resuming a reader,
/// scheduling a socket flush).
protocol XenStoreConnectionSink: Sendable {
    func enqueue(_ bytes: [UInt8]) -> (@Sendable () -> Void)?
    func close() -> (@Sendable () -> Void)?
}

/// A registered watch.
struct XenStoreWatch: Sendable {
    /// The path as the client sent it (what the registration event reports).
    var path: String
    /// Absolute (or `@...`) path.
    var absolute: String
    var token: String
    /// `/local/domain/<domid>/` if the watch path was relative: stripped from event paths.
    var relativePrefix: String?
}

/// One connection's state inside the server.
struct XenStoreConnectionState: Sendable {
    var domain: DomainID
    var sink: any XenStoreConnectionSink
    var parser = XenStorePacketParser()
    var watches: [XenStoreWatch] = []
    var transactions: [UInt32: XenStoreTransaction] = [:]
    var nextTransactionID: UInt32 = 1

    /// Takes the parser out (leaving a fresh one) together with the domain, without copying the rest.
    mutating func takeParser() -> (XenStorePacketParser, DomainID) {
        let taken = parser
        parser = XenStorePacketParser(maximumPayload: taken.maximumPayload)
        return (taken, domain)
    }
}

/// A domain the server was told about (`INTRODUCE`).
struct XenStoreDomainRecord: Sendable {
    var gfn: Int64
    var port: EventChannelPort
    var target: DomainID?
}

/// The whole xenstored: tree, connections, domains, as a pure state machine. Each entry point takes input
/// for one connection and leaves the bytes to send in `outbox`; the owner (`XenStoreServer`) holds it in a
/// mutex and hands the outbox to the connections' sinks.
///
/// OCaml: oxenstored's `Process` + `Store` + `Connections` / C xenstored's `process_message`
struct XenStoreState: Sendable {
    var tree: XenStoreTree
    var generation: UInt64 = 0
    var connections: [XenStoreConnectionID: XenStoreConnectionState] = [:]
    var domains: [DomainID: XenStoreDomainRecord] = [.dom0: XenStoreDomainRecord(gfn: 0, port: 0)]
    var specialPermissions: [String: XenStorePermissions] = [
        "@introduceDomain": XenStorePermissions(owner: .dom0), "@releaseDomain": XenStorePermissions(owner: .dom0),
    ]
    var quotas: XenStoreQuotas
    var nextConnectionID: UInt64 = 1
    /// Bytes to send, per connection, in production order.
    var outbox: [(XenStoreConnectionID, [UInt8])] = []
    /// Connections to close after the outbox is delivered.
    var closing: [XenStoreConnectionID] = []
    /// Lines of `CONTROL print` and protocol complaints, drained by the server into its logger.
    var log: [String] = []

    init(quotas: XenStoreQuotas) {
        self.quotas = quotas
        var generation: UInt64 = 0
        self.tree = XenStoreTree(generation: &generation)
        self.generation = generation
    }

    // MARK: - Connections

    mutating func addConnection(domain: DomainID, sink: any XenStoreConnectionSink) -> XenStoreConnectionID {
        let id = XenStoreConnectionID(nextConnectionID)
        nextConnectionID += 1
        connections[id] = XenStoreConnectionState(domain: domain, sink: sink)
        return id
    }

    /// Forgets a connection with its watches and transactions (open transactions are aborted).
    mutating func removeConnection(_ id: XenStoreConnectionID) -> (any XenStoreConnectionSink)? {
        connections.removeValue(forKey: id)?.sink
    }

    /// Feeds bytes a connection sent; processes every complete packet. An oversize packet closes the
    /// connection, as xenstored does; other connections are unaffected.
    mutating func receive(_ bytes: some Sequence<UInt8>, from id: XenStoreConnectionID) {
        // The parser leaves the connection's state while its packets are handled (one dictionary lookup per
        // batch, not per packet; nothing a request does touches another request's bytes) and goes back after.
        guard case (var parser, let domain)? = connections[id]?.takeParser() else { return }
        defer { connections[id]?.parser = parser }
        parser.append(bytes)
        while true {
            let packet: XenStorePacket?
            do {
                packet = try parser.next()
            } catch {
                log.append("connection \(id): \(error); closing it")
                closing.append(id)
                return
            }
            guard let packet else { return }
            process(packet, from: id, domain: domain)
        }
    }

    /// Handles one request packet and queues the reply (plus any watch events it caused).
    mutating func process(_ packet: XenStorePacket, from id: XenStoreConnectionID, domain: DomainID) {
        let reply: XenStoreReply
        var newWatch: (path: String, token: String)?
        do throws(StoreFailure) {
            let request: XenStoreRequest
            do {
                request = try XenStoreRequest(decoding: packet)
            } catch .unsupportedMessageType {
                throw StoreFailure(.enosys)
            } catch {
                throw StoreFailure(.einval)
            }
            reply = try handle(request, transactionID: packet.transactionID, from: id, domain: domain)
            if case .watch(let path, let token) = request { newWatch = (path, token) }
        } catch {
            reply = .error(error.name)
        }
        var out = reply.packet(requestID: packet.requestID, transactionID: packet.transactionID)
        if out.payload.count > XenStoreLimits.payloadMax {
            // xenstored's send_reply: a reply that would not fit is replaced by E2BIG.
            out = XenStoreReply.error(.e2big).packet(requestID: packet.requestID, transactionID: packet.transactionID)
        }
        send(out, to: id)
        if let (path, token) = newWatch {
            // A new watch fires once, after its OK, with the path as given.
            send(XenStoreReply.watchEvent(path: path, token: token).packet(requestID: 0, transactionID: 0), to: id)
        }
    }

    mutating func send(_ packet: XenStorePacket, to id: XenStoreConnectionID) {
        if let last = outbox.indices.last, outbox[last].0 == id {
            packet.encode(into: &outbox[last].1)
        } else {
            outbox.append((id, packet.bytes))
        }
    }

    // MARK: - Dispatch

    mutating func handle(
        _ request: XenStoreRequest, transactionID tid: UInt32, from id: XenStoreConnectionID, domain: DomainID
    ) throws(StoreFailure) -> XenStoreReply {
        // No copy of the connection state may stay alive here: it would make every mutation below copy.
        let context = OperationContext(connection: id, domain: domain, transaction: request.isTransactional ? tid : 0)
        if context.transaction != 0 && connections[id]?.transactions[context.transaction] == nil {
            throw StoreFailure(.enoent)
        }
        switch request {
        case .read(let path): return .read(try read(path, context).value)
        case .directory(let path): return .directory(try read(path, context, children: true).children)
        case .directoryPart(let path, let offset): return try directoryPart(path, offset: offset, context)
        case .getPermissions(let path): return .permissions(try getPermissions(path, context))
        case .write(let path, let value):
            try write(path, value: value, context)
            return .ok(.write)
        case .mkdir(let path):
            try mkdir(path, context)
            return .ok(.mkdir)
        case .rm(let path):
            try rm(path, context)
            return .ok(.rm)
        case .setPermissions(let path, let permissions):
            try setPermissions(path, permissions, context)
            return .ok(.setPermissions)
        case .watch(let path, let token):
            try addWatch(path, token: token, context)
            return .ok(.watch)
        case .unwatch(let path, let token):
            try removeWatch(path, token: token, context)
            return .ok(.unwatch)
        case .resetWatches:
            connections[id]?.watches.removeAll()
            connections[id]?.transactions.removeAll()
            return .ok(.resetWatches)
        case .transactionStart:
            guard tid == 0 else { throw StoreFailure(.ebusy) }
            return .transactionStarted(try startTransaction(context))
        case .transactionEnd(let commit):
            guard tid != 0 else { throw StoreFailure(.enoent) }
            try endTransaction(tid, commit: commit, context)
            return .ok(.transactionEnd)
        case .getDomainPath(let target): return .domainPath(XenStorePath.domainPath(of: target))
        case .isDomainIntroduced(let target): return .isDomainIntroduced(domains[target] != nil)
        case .introduce(let target, let gfn, let port):
            try requirePrivilege(context)
            introduce(target, gfn: gfn, port: port)
            return .ok(.introduce)
        case .release(let target):
            try requirePrivilege(context)
            try release(target)
            return .ok(.release)
        case .resume(let target):
            try requirePrivilege(context)
            guard domains[target] != nil else { throw StoreFailure(.enoent) }
            return .ok(.resume)
        case .setTarget(let target, let targetOfTarget):
            try requirePrivilege(context)
            guard domains[target] != nil, domains[targetOfTarget] != nil else { throw StoreFailure(.enoent) }
            domains[target]?.target = targetOfTarget
            return .ok(.setTarget)
        case .control(let arguments):
            try requirePrivilege(context)
            return try control(arguments)
        }
    }

    func requirePrivilege(_ context: OperationContext) throws(StoreFailure) {
        guard isPrivileged(context.domain) else { throw StoreFailure(.eacces) }
    }

    /// dom0 is the privileged domain (xenstored's `domain_is_unprivileged` is false only for it here).
    func isPrivileged(_ domain: DomainID) -> Bool { domain == .dom0 }

    /// What `domain` may do under `permissions`: everything if privileged; a domain with a target acts with
    /// the target's rights too (C xenstored's `perm_for_conn`).
    func access(_ domain: DomainID, _ permissions: XenStorePermissions) -> XenStoreAccess {
        if isPrivileged(domain) { return .both }
        let target = domains[domain]?.target
        if permissions.owner == domain || (target != nil && permissions.owner == target) { return .both }
        for entry in permissions.acl where entry.domain == domain || (target != nil && entry.domain == target) {
            return entry.access
        }
        return permissions.others
    }

    // MARK: - CONTROL

    mutating func control(_ arguments: [String]) throws(StoreFailure) -> XenStoreReply {
        switch arguments.first {
        case "print":
            log.append(arguments.dropFirst().joined(separator: " "))
            return .control(Array("OK\0".utf8))
        case "check":
            let problems = tree.check()
            guard problems.isEmpty else {
                return .control(Array((problems.joined(separator: "\n") + "\n\0").utf8))
            }
            return .control(Array("OK\0".utf8))
        case "help":
            return .control(Array("Available commands:\ncheck\nprint <string>\nhelp\n\0".utf8))
        default: throw StoreFailure(.einval)
        }
    }
}

/// Who is asking, and in which transaction (0: none).
struct OperationContext {
    var connection: XenStoreConnectionID
    var domain: DomainID
    var transaction: UInt32
}
