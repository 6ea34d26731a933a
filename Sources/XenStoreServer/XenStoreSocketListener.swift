import NIOCore
import NIOPosix
import Synchronization
public import XenCore

/// A unix-socket listener of a `XenStoreServer`. Accepted connections speak as domain 0, as socket
/// connections to C xenstored do, unless the listener was opened for another domain (a test aid: it lets the
/// stock tools act as an unprivileged domain).
///
/// OCaml: none (`ocaml-xenstore-server --enable-unix --path`)
public final class XenStoreSocketListener: Sendable {
    /// The socket path.
    public let path: String
    private let channel: any Channel
    private let registry: ChildRegistry

    fileprivate init(path: String, channel: any Channel, registry: ChildRegistry) {
        self.path = path
        self.channel = channel
        self.registry = registry
    }

    /// Stops accepting, closes every accepted connection and removes nothing else (the socket file is removed
    /// by the close of the listening socket).
    ///
    /// OCaml: none
    public func close() async {
        try? await channel.close()
        let open = registry.channels.withLock { Array($0.values) }
        for child in open { try? await child.close() }
    }
}

/// Bookkeeping shared by the listener and its accepted channels.
fileprivate final class ChildRegistry: Sendable {
    let channels = Mutex<[ObjectIdentifier: any Channel]>([:])
}

extension XenStoreServer {
    /// Listens on a unix socket at `path` (an existing socket file there is replaced). Point libxenstore at it
    /// with `XENSTORED_PATH=<path>`. Connections act as `domain` (dom0, as in C xenstored, by default).
    ///
    /// OCaml: none (C xenstored `init_sockets`)
    public func listen(
        unixSocketPath path: String, domain: DomainID = .dom0
    ) async throws(XenStoreServerError) -> XenStoreSocketListener {
        let registry = ChildRegistry()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { [self] channel in
                let key = ObjectIdentifier(channel)
                registry.channels.withLock { $0[key] = channel }
                channel.closeFuture.whenComplete { _ in
                    _ = registry.channels.withLock { $0.removeValue(forKey: key) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(XenStoreSocketHandler(server: self, domain: domain))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        } catch {
            throw XenStoreServerError.listenFailed(path: path, reason: "\(error)")
        }
        return XenStoreSocketListener(path: path, channel: channel, registry: registry)
    }
}

/// Moves bytes between one accepted socket and the server.
private final class XenStoreSocketHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let server: XenStoreServer
    let domain: DomainID
    var id: XenStoreConnectionID?

    init(server: XenStoreServer, domain: DomainID) {
        self.server = server
        self.domain = domain
    }

    func channelActive(context: ChannelHandlerContext) {
        id = server.attach(domain: domain, sink: SocketSink(channel: context.channel))
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let id else { return }
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { server.receive($0, from: id) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let id { server.disconnect(id) }
        id = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Queues a socket connection's outgoing bytes; one event-loop task drains whatever accumulated, so 64
/// pipelined replies leave in one write.
private final class SocketSink: XenStoreConnectionSink {
    private struct Pending {
        /// Replies not yet handed to the channel, gathered straight into the buffer the write sends.
        var bytes: ByteBuffer
        var scheduled = false
    }
    let channel: any Channel
    private let allocator: ByteBufferAllocator
    private let pending: Mutex<Pending>

    init(channel: any Channel) {
        self.channel = channel
        self.allocator = channel.allocator
        self.pending = Mutex(Pending(bytes: allocator.buffer(capacity: 0)))
    }

    func enqueue(_ bytes: [UInt8]) -> (@Sendable () -> Void)? {
        let schedule = pending.withLock { pending -> Bool in
            pending.bytes.writeBytes(bytes)
            guard !pending.scheduled else { return false }
            pending.scheduled = true
            return true
        }
        guard schedule else { return nil }
        return { [self] in channel.eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let bytes = pending.withLock { pending -> ByteBuffer in
            pending.scheduled = false
            let bytes = pending.bytes
            pending.bytes = allocator.buffer(capacity: 0)
            return bytes
        }
        guard bytes.readableBytes > 0 else { return }
        channel.writeAndFlush(bytes, promise: nil)
    }

    func close() -> (@Sendable () -> Void)? {
        { [channel] in
            // Let queued replies go first, then close.
            channel.eventLoop.execute { channel.close(promise: nil) }
        }
    }
}
