import Synchronization
public import XenCore
public import XenStoreProtocol

/// Errors of the server's own connections.
///
/// OCaml: none
public enum XenStoreServerError: Error, Hashable, Sendable {
    /// The connection was closed (by `close()` or by the server after an oversize packet).
    case connectionClosed
    /// A second task tried to read while one was already waiting.
    case concurrentRead
    /// Binding or listening on a socket failed.
    case listenFailed(path: String, reason: String)
}

/// An in-process connection to a `XenStoreServer` with a fixed domain identity. Bytes written are processed
/// at once under the server lock; replies and watch events come back through `read()`.
///
/// OCaml: none (the in-process `Xs_server` test transport)
public final class XenStoreServerConnection: XenStoreTransport {
    /// The server this connection belongs to.
    public let server: XenStoreServer
    /// The connection's id within the server.
    public let id: XenStoreConnectionID
    /// The domain this connection speaks as.
    public let domain: DomainID
    let sink: InProcessSink

    init(server: XenStoreServer, id: XenStoreConnectionID, domain: DomainID, sink: InProcessSink) {
        self.server = server
        self.id = id
        self.domain = domain
        self.sink = sink
    }

    /// Sends request bytes (any chunking). Throws `connectionClosed` once closed.
    ///
    /// OCaml: `Xs_client_lwt.IO.write`
    public func write(_ bytes: [UInt8]) async throws {
        guard !sink.isClosed else { throw XenStoreServerError.connectionClosed }
        server.receive(bytes, from: id)
    }

    /// The next bytes from the server; nil once the connection is closed and drained.
    ///
    /// OCaml: `Xs_client_lwt.IO.read`
    public func read() async throws -> [UInt8]? { try await sink.next() }

    /// Closes the connection: its watches and transactions go away, a pending read returns nil.
    ///
    /// OCaml: `Xs_client_lwt.IO.destroy`
    public func close() async { server.disconnect(id) }
}

/// The server-to-client byte queue of an in-process connection.
final class InProcessSink: XenStoreConnectionSink {
    private struct Inbox {
        var bytes: [UInt8] = []
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
        var closed = false
    }
    private let inbox = Mutex(Inbox())

    var isClosed: Bool { inbox.withLock { $0.closed } }

    func enqueue(_ bytes: [UInt8]) -> (@Sendable () -> Void)? {
        inbox.withLock { inbox -> (@Sendable () -> Void)? in
            guard !inbox.closed else { return nil }
            if let waiter = inbox.waiter {
                inbox.waiter = nil
                return { waiter.resume(returning: bytes) }
            }
            inbox.bytes.append(contentsOf: bytes)
            return nil
        }
    }

    func close() -> (@Sendable () -> Void)? {
        inbox.withLock { inbox -> (@Sendable () -> Void)? in
            inbox.closed = true
            guard let waiter = inbox.waiter else { return nil }
            inbox.waiter = nil
            return { waiter.resume(returning: nil) }
        }
    }

    func next() async throws -> [UInt8]? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8]?, any Error>) in
                let action = inbox.withLock { inbox -> (@Sendable () -> Void)? in
                    if !inbox.bytes.isEmpty {
                        let bytes = inbox.bytes
                        inbox.bytes = []
                        return { continuation.resume(returning: bytes) }
                    }
                    if inbox.closed { return { continuation.resume(returning: nil) } }
                    if Task.isCancelled { return { continuation.resume(throwing: CancellationError()) } }
                    if inbox.waiter != nil {
                        return { continuation.resume(throwing: XenStoreServerError.concurrentRead) }
                    }
                    inbox.waiter = continuation
                    return nil
                }
                action?()
            }
        } onCancel: {
            let waiter = inbox.withLock { inbox in
                let waiter = inbox.waiter
                inbox.waiter = nil
                return waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }
}
