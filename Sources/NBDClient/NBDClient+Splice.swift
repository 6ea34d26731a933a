public import XenCore

// MARK: - Reads into and writes from a pipe (zero-copy relays)

extension NBDClient {
    /// True when requests can splice their data: every connection is plain (not TLS) and runs on its own
    /// I/O thread. Under TLS the pipe calls below still work, copying through pages.
    ///
    /// OCaml: none
    public var splicesData: Bool { directs.allSatisfy { $0 != nil } }

    /// One `NBD_CMD_READ` of `length` bytes from byte `offset`, its data put into `pipe` — on a plain
    /// connection spliced from the socket, never copied through user space. `pipe` must be empty and
    /// hold `length` (at most ``maxRequestBytes``); afterwards it holds exactly the data, for
    /// ``write(at:length:from:fua:isolation:)`` on another client, or to be discarded.
    ///
    /// A pipe takes data in order: a server that answers the READ with chunks out of order (allowed, but no
    /// server here does) fails it with ``NBDError/unsupported(_:)`` — then drop what the pipe holds and read
    /// into buffers instead. On any error the pipe's contents are undefined.
    ///
    /// OCaml: none (`Nbd.Client.read` fills buffers; libnbd has no splice)
    public func read(
        at offset: UInt64, length: Int, into pipe: SplicePipe, isolation: isolated (any Actor)? = #isolation
    ) async throws(NBDError) {
        try check(offset: offset, length: UInt64(length), write: false)
        try checkPipe(pipe, length: length, holding: 0)
        guard splicesData else {
            let pages = PageBuffer(byteCount: length)
            try await read(at: offset, into: [pages])
            guard pipe.append(UnsafeRawBufferPointer(start: pages.pointer, count: length)) else {
                throw .io("cannot fill the pipe")
            }
            return
        }
        _ = try await send(.read, offset: offset, length: UInt64(length), pipe: pipe).reply()
    }

    /// One `NBD_CMD_WRITE` at byte `offset` of the first `length` bytes `pipe` holds (at most
    /// ``maxRequestBytes``), on a plain connection spliced to the socket; `fua` forces them to stable
    /// storage first. The pipe is held until they are sent, and is empty again when this returns.
    ///
    /// OCaml: none (`Nbd.Client.write` takes buffers; libnbd has no splice)
    public func write(
        at offset: UInt64, length: Int, from pipe: SplicePipe, fua: Bool = false,
        isolation: isolated (any Actor)? = #isolation
    ) async throws(NBDError) {
        try check(offset: offset, length: UInt64(length), write: true)
        let flags = try fuaFlag(fua)
        try checkPipe(pipe, length: length, holding: length)
        guard splicesData else {
            let pages = PageBuffer(byteCount: length)
            guard pipe.take(into: pages) else { throw .io("cannot read \(length) bytes from the pipe") }
            try await write(at: offset, from: [pages], fua: fua)
            return
        }
        _ = try await send(.write, flags: flags, offset: offset, length: UInt64(length), pipe: pipe).reply()
    }

    /// A pipe request is one request that fits the pipe; a READ needs it empty, a WRITE needs its bytes there.
    private func checkPipe(_ pipe: SplicePipe, length: Int, holding: Int) throws(NBDError) {
        guard length > 0, length <= maxRequestBytes, length <= pipe.capacity else {
            throw .invalidRequest("\(length) bytes through a pipe of \(pipe.capacity) (at most \(maxRequestBytes))")
        }
        let held = pipe.count
        guard holding == 0 ? held == 0 : held >= holding else {
            throw .invalidRequest(
                "the pipe holds \(held) bytes, \(holding == 0 ? "not empty" : "fewer than \(holding)")")
        }
    }
}
