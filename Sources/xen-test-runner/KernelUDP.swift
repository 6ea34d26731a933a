import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A UDP socket of the dom0 kernel, bound to an address the net checks gave an interface: the kernel's end
/// of the datagram streams (receiving on a thread of its own, sending from blocking calls).
final class KernelUDP: Sendable {
    let descriptor: Int32
    private let received = Mutex(TinyHost.Received())
    private let stop = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)

    /// Binds `address:port`.
    init(address: UInt32, port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try require(fd >= 0, errnoText("socket"))
        var size: Int32 = 4 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var local = Self.socketAddress(address, port)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else {
            let failure = CheckFailure(errnoText("bind \(dotted(address)):\(port)"))
            Glibc.close(fd)
            throw failure
        }
        descriptor = fd
    }

    static func socketAddress(_ address: UInt32, _ port: UInt16) -> sockaddr_in {
        var value = sockaddr_in()
        value.sin_family = sa_family_t(AF_INET)
        value.sin_port = port.bigEndian
        value.sin_addr = in_addr(s_addr: address.bigEndian)
        return value
    }

    var counts: TinyHost.Received { received.withLock { $0 } }

    /// Receives (and hashes) datagrams on a thread until ``close()``.
    func startReceiving() {
        let fd = descriptor
        started.store(true, ordering: .releasing)
        let status = DetachedThread.spawn { [self] in
            let buffer = PageBuffer(pages: 17)
            while !stop.load(ordering: .acquiring) {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 100) > 0 else { continue }
                let count = recv(fd, buffer.pointer, buffer.count, 0)
                guard count >= 0 else { continue }
                let payload = buffer.slice(from: 0, count: count)
                received.withLock { state in
                    state.datagrams += 1
                    state.bytes += count
                    state.hash = streamHash(state.hash, payload)
                }
            }
            done.store(true, ordering: .releasing)
        }
        if status != 0 { done.store(true, ordering: .releasing) }
    }

    /// Sends `payload` to `address:port` (a blocking call: from `blocking {}`).
    func send(_ payload: PageBuffer, to address: UInt32, port: UInt16) -> Bool {
        var remote = Self.socketAddress(address, port)
        let sent = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(descriptor, payload.pointer, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return sent == payload.count
    }

    /// Stops the receiver thread (waiting for it) and closes the socket.
    func close() async {
        stop.store(true, ordering: .releasing)
        while started.load(ordering: .acquiring), !done.load(ordering: .acquiring) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        _ = Glibc.close(descriptor)
    }
}
