import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// TLS for a connection thread that speaks plain bytes: after `STARTTLS` the client's socket goes to a
/// swift-nio channel with swift-nio-ssl's server handler, which relays the decrypted stream to one end of
/// a unix socket pair; the connection thread carries on with the other end, so the rest of the handshake
/// and all of transmission run the same code with and without TLS. Back-pressure holds both ways: a side
/// reads only while the other can take what it reads.
///
/// OCaml: none (ocaml-nbd's `Channel.generic_of_tls_channel` wraps an OpenSSL channel)
final class NBDTLSBridge: Sendable {
    /// The connection thread's end of the pair (plaintext).
    let plaintext: Int32
    private let channels: [any Channel]

    private init(plaintext: Int32, channels: [any Channel]) {
        self.plaintext = plaintext
        self.channels = channels
    }

    /// Moves `socket` under TLS; nil if the channels cannot be set up (the caller closes the connection).
    /// The TLS handshake itself runs as the client starts it; if it fails, the plaintext end sees the
    /// connection close.
    static func start(socket: Int32, context: NIOSSLContext) -> NBDTLSBridge? {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            return nil
        }
        _ = fcntl(pair[0], F_SETFL, fcntl(pair[0], F_GETFL) | O_NONBLOCK)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let encrypted = NBDGlueHandler()
        let decrypted = NBDGlueHandler()
        encrypted.partner = decrypted
        decrypted.partner = encrypted
        // NIO owns both descriptors from here (it closes them with the channels); a duplicate of the client's
        // socket keeps the connection thread's own descriptor valid until it closes it.
        let tlsSide = fcntl(socket, F_DUPFD_CLOEXEC, 0)
        guard tlsSide >= 0 else {
            Glibc.close(pair[0])
            Glibc.close(pair[1])
            return nil
        }
        do {
            let tls = try ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        try channel.pipeline.syncOperations.addHandler(encrypted)
                    }
                }
                .withConnectedSocket(tlsSide).wait()
            do {
                let plain = try ClientBootstrap(group: loop)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(decrypted)
                        }
                    }
                    .withConnectedSocket(pair[1]).wait()
                return NBDTLSBridge(plaintext: pair[0], channels: [tls, plain])
            } catch {
                tls.close(promise: nil)
                Glibc.close(pair[0])
                return nil
            }
        } catch {
            Glibc.close(pair[0])
            Glibc.close(pair[1])
            return nil
        }
    }

    /// Closes both channels (the TLS one with `close_notify`).
    func close() {
        for channel in channels { channel.close(promise: nil) }
    }
}

/// Relays bytes between two channels on one event loop: what one side reads, its partner writes. A side
/// asks its channel for more only while the partner's channel is writable; when either side closes, so
/// does the other.
private final class NBDGlueHandler: ChannelDuplexHandler, @unchecked Sendable {
    // @unchecked Sendable: every member is touched only on the shared event loop.
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: NBDGlueHandler?
    private var context: ChannelHandlerContext?
    private var readWanted = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The partner may have asked to read before this side existed.
        partner?.resumeReading()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.forward(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.context?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? false {
            context.read()
        } else {
            readWanted = true
        }
    }

    private func forward(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func resumeReading() {
        guard readWanted, let context else { return }
        readWanted = false
        context.read()
    }
}
