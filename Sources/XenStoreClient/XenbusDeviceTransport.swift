import Glibc
public import XenStoreProtocol

/// A connection through the Linux xenbus character device (`/dev/xen/xenbus`), for domains without a
/// xenstored socket. The device wants exactly one packet per `write(2)` and answers WATCH/UNWATCH itself
/// (older kernels with req_id 0, which `XenStoreClient` accepts; a refused WATCH/UNWATCH comes back as a
/// failed `write`, turned here into an `XS_ERROR` reply to that request).
///
/// Requests are serialised, not pipelined: the device is given the next request only once the reply to the
/// previous one has been read. The kernel does restore our req_id in every reply (`caller_req_id`), but it
/// keeps pointing at the request body in its one per-file write buffer until its xenbus thread has copied
/// the body to the ring, so a second `write(2)` in between would send the first request's header with the
/// second request's body, and the reply to another request's question would come back under the first
/// request's req_id (`XenbusDeviceGate` has the details). The client may still have any number of
/// requests outstanding; they wait in the transport and go one round trip at a time, as libxenstore's do.
///
/// OCaml: none (libxenstore's `xs_open` device fallback; mirage uses the ring directly)
public final class XenbusDeviceTransport: XenStoreTransport {
    let stream: DescriptorStream

    private init(stream: DescriptorStream) {
        self.stream = stream
    }

    /// libxenstore's device path: `XENSTORED_PATH`, else `/dev/xen/xenbus` if it exists, else
    /// `/proc/xen/xenbus`.
    ///
    /// OCaml: none (libxenstore `xs_domain_dev`)
    public static func defaultPath(environment: [String: String] = XenStoreEnvironment.current()) -> String {
        if let path = environment["XENSTORED_PATH"], !path.isEmpty { return path }
        if access("/dev/xen/xenbus", F_OK) == 0 { return "/dev/xen/xenbus" }
        return "/proc/xen/xenbus"
    }

    /// Opens the device at `path`.
    ///
    /// OCaml: none (libxenstore `get_handle` on the device)
    public static func open(path: String) throws(XenStoreError) -> XenbusDeviceTransport {
        let descriptor = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { throw .connectionFailed(path: path, errno: errno) }
        return try adopting(descriptor: descriptor, path: path)
    }

    /// Wraps an already open descriptor that behaves like the device (tests use one end of a
    /// `SOCK_SEQPACKET` pair, which keeps write boundaries visible); `path` names it in errors.
    static func adopting(descriptor: Int32, path: String? = nil) throws(XenStoreError) -> XenbusDeviceTransport {
        do {
            let stream = try DescriptorStream(descriptor: descriptor, mode: .packetPerWrite)
            try stream.start()
            return XenbusDeviceTransport(stream: stream)
        } catch {
            throw .connectionFailed(path: path ?? "fd \(descriptor)", errno: error.errno)
        }
    }

    /// Writes each packet of `bytes` with its own `write(2)`.
    ///
    /// OCaml: none
    public func write(_ bytes: [UInt8]) async throws {
        try await stream.write(bytes)
    }

    /// The next bytes from the device; nil once closed.
    ///
    /// OCaml: none
    public func read() async throws -> [UInt8]? {
        try await stream.read()
    }

    /// Stops the I/O thread; the descriptor is closed once nothing uses it.
    ///
    /// OCaml: none
    public func close() async {
        stream.close()
    }
}

/// Packet helpers for the device's one-packet-per-write rule.
enum XenbusDeviceFraming {
    /// The little-endian word at `offset`.
    static func word(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    /// An `XS_ERROR` reply to the request at `offset` (its req_id and tx_id) naming `errno`.
    static func errorReply(for bytes: [UInt8], at offset: Int, errno: Int32) -> [UInt8] {
        let name: String
        switch errno {
        case ENOENT: name = "ENOENT"
        case EACCES: name = "EACCES"
        case EEXIST: name = "EEXIST"
        case EPERM: name = "EPERM"
        case ENOSPC: name = "ENOSPC"
        case E2BIG: name = "E2BIG"
        case ENOMEM: name = "ENOMEM"
        case EAGAIN: name = "EAGAIN"
        case EBUSY: name = "EBUSY"
        case ENOSYS: name = "ENOSYS"
        default: name = "EINVAL"
        }
        let packet = XenStorePacket(
            type: .error, requestID: word(bytes, offset + 4), transactionID: word(bytes, offset + 8),
            payload: Array(name.utf8) + [0])
        return packet.bytes
    }
}
