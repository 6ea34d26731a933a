extension VchanConnection {
    /// The bytes the peer sends, as an async sequence of chunks (each at most `maximum` bytes). Ends when
    /// the peer has gone and everything was read, or this end was closed; throws a protocol violation or a
    /// lost peer domain. Pull-driven: bytes stay in the ring until asked for, so a slow consumer holds the
    /// peer back.
    ///
    /// OCaml: a loop over `Vchan.Endpoint.read` until `Eof` (polymorphic variant)
    public func chunks(maximum: Int = 65536) -> VchanChunks { VchanChunks(connection: self, maximum: maximum) }
}

/// Chunks read from a vchan. See ``VchanConnection/chunks(maximum:)``.
///
/// OCaml: a loop over `Vchan.Endpoint.read`
public struct VchanChunks: AsyncSequence, Sendable {
    /// A non-empty chunk of bytes, in order.
    public typealias Element = [UInt8]
    let connection: VchanConnection
    let maximum: Int

    /// One `read` per element.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let connection: VchanConnection
        let maximum: Int

        /// The next chunk; nil once the stream ended (peer gone and drained, closed here, task cancelled).
        public mutating func next() async throws(VchanError) -> [UInt8]? {
            do {
                return try await connection.read(maximum: maximum)
            } catch {
                switch error {
                case .peerClosed, .closed, .cancelled: return nil
                default: throw error
                }
            }
        }
    }

    /// OCaml: none (Swift iteration)
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(connection: connection, maximum: maximum) }
}
