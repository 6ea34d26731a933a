/// A byte stream to a xenstore server: the one seam every xenstore transport sits behind (a unix socket,
/// the `/dev/xen/xenbus` device, a domain's shared ring page, or an in-process connection to
/// `XenStoreServer`). The client speaks the wire protocol over it; the transport only moves bytes.
///
/// OCaml: `Xs_client_lwt.IO` (`create`, `read`, `write`, `destroy`)
public protocol XenStoreTransport: Sendable {
    /// Writes `bytes` (whole packets, possibly several) in order. Throws once the stream is broken.
    ///
    /// OCaml: `Xs_client_lwt.IO.write`
    func write(_ bytes: [UInt8]) async throws

    /// Waits for and returns the next bytes the server sent (at least one byte), in any chunking;
    /// nil at end of stream. Only one task reads at a time.
    ///
    /// OCaml: `Xs_client_lwt.IO.read`
    func read() async throws -> [UInt8]?

    /// Closes the stream; a pending `read` returns nil and later writes throw.
    ///
    /// OCaml: `Xs_client_lwt.IO.destroy`
    func close() async
}
