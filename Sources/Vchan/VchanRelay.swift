import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

extension VchanConnection {
    /// What ends a relay.
    ///
    /// OCaml: none (`xencat` runs until killed)
    public enum RelayEnd: Sendable, Equatable {
        /// The peer closed and everything it sent was written out.
        case peerClosed
        /// The input ended (and, with `closeOnInputEnd`, this end was closed).
        case inputEnded
    }

    /// Copies `input` to the vchan and the vchan to `output` (file descriptors: stdin/stdout, pipes,
    /// sockets) until the peer closes, or until `input` ends when `closeOnInputEnd` is set; blocking reads
    /// and writes run on threads of their own. Vchan has no half-close: without `closeOnInputEnd`, the end
    /// of `input` only stops sending, and the relay goes on until the peer closes.
    ///
    /// OCaml: `xencat` (cli/xencat.ml); C: `vchan-socket-proxy`'s `data_loop`
    public func relay(
        input: Int32, output: Int32, closeOnInputEnd: Bool = false, chunkSize: Int = 65536
    ) async throws(VchanError) -> RelayEnd {
        let (results, deliver) = AsyncStream<Result<RelayEnd?, VchanError>>.makeStream()
        // Unstructured on purpose: the sender may sit in a read of `input` that only the input's writer can
        // end, and the relay must not wait for it (its thread finishes when the read returns).
        let sender = Task {
            deliver.yield(await Result { () async throws(VchanError) in try await send(from: input, chunkSize) })
        }
        let receiver = Task {
            deliver.yield(await Result { () async throws(VchanError) in try await receive(into: output, chunkSize) })
        }
        var outcome: Result<RelayEnd, VchanError> = .success(.peerClosed)
        var finished = 0
        for await next in results {
            finished += 1
            switch next {
            case .success(.inputEnded?) where !closeOnInputEnd: continue
            case .success(let end?): outcome = .success(end)
            case .success(nil) where finished < 2: continue
            case .success(nil): break
            case .failure(let error): outcome = .failure(error)
            }
            break
        }
        sender.cancel()
        receiver.cancel()
        deliver.finish()
        if case .success(.inputEnded) = outcome { await close() }
        return try outcome.get()
    }

    private func send(from input: Int32, _ chunkSize: Int) async throws(VchanError) -> RelayEnd? {
        while !Task.isCancelled {
            let chunk = await BlockingPool.shared.run(mayBlockIndefinitely: true) {
                Descriptor.readChunk(input, chunkSize)
            }
            if Task.isCancelled { break }
            switch chunk {
            case .success(let bytes) where bytes.isEmpty: return .inputEnded
            case .success(let bytes): try await write(bytes)
            case .failure(let error): throw error
            }
        }
        return nil
    }

    private func receive(into output: Int32, _ chunkSize: Int) async throws(VchanError) -> RelayEnd? {
        for try await chunk in chunks(maximum: chunkSize) {
            if let failure = await BlockingPool.shared.run(
                mayBlockIndefinitely: true, { Descriptor.writeAll(output, chunk) })
            {
                throw failure
            }
        }
        return failure == nil ? .peerClosed : nil
    }
}

/// Blocking reads and writes of the relayed descriptors (run on `BlockingPool`, as calls that may block without
/// bound: a pipe or a terminal waits for its other end).
private enum Descriptor {
    static func readChunk(_ fd: Int32, _ size: Int) -> Result<[UInt8], VchanError> {
        var buffer = [UInt8](repeating: 0, count: size)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count >= 0 { return .success(Array(buffer.prefix(count))) }
            if errno != EINTR { return .failure(.file(op: "read fd \(fd)", errno: errno)) }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> VchanError? {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written > 0 {
                offset += written
            } else if errno != EINTR {
                return .file(op: "write fd \(fd)", errno: errno)
            }
        }
        return nil
    }
}

extension Result where Failure == VchanError {
    /// The outcome of `body` as a value.
    init(_ body: () async throws(VchanError) -> Success) async {
        do throws(VchanError) { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
