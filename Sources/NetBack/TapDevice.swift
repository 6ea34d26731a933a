import CXen
public import NetifProtocol
public import NetworkDevice
import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// Why a TAP device could not be opened or used.
///
/// OCaml: none (mirage-net-unix's `Tuntap` raises `Failure`)
public enum TapError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `/dev/net/tun` could not be opened or the interface attached (no permission, no tun module).
    case open(name: String, errno: Int32)
    /// The reader thread could not be started.
    case thread(Int32)

    public var description: String {
        switch self {
        case .open(let name, let code): "TAP device \(name): \(String(cString: strerror(code)))"
        case .thread(let code): "TAP reader thread: \(String(cString: strerror(code)))"
        }
    }
}

/// A Linux TAP interface as a `NetworkDevice`: frames written here appear as received on the interface in
/// the kernel; frames the kernel sends out of the interface come out of ``listen(headerSize:)``. Opened with
/// `IFF_VNET_HDR`, so checksum and segmentation offload metadata cross in both directions (``VirtioNetHeader``).
///
/// One thread reads the device (blocking reads never sit on the cooperative pool): while the reader of
/// ``listen(headerSize:)`` is behind, it stops reading and the kernel queues (and, past its queue, drops and
/// counts) frames, as for any slow NIC.
/// OCaml: none (mirage-net-unix's `Netif` over `Tuntap`; the Linux side of a Xen vif bridge)
public final class TapDevice: NetworkDevice {
    /// The interface name (e.g. "tap0", or what the kernel picked).
    public let name: String
    /// The interface's own address (the kernel side).
    ///
    /// OCaml: `Netif.mac` (mirage-net-unix)
    public let mac: MACAddress
    /// The interface's MTU when opened.
    ///
    /// OCaml: `Netif.mtu` (mirage-net-unix)
    public let mtu: Int

    private let descriptor: Int32
    /// Wakes the reader thread (room in the frame queue again, or a stop).
    private let wake: WakeSignal
    private let frames: FrameQueue
    private let counters = NetworkCounters()
    private let scratch = ScratchBuffers()
    private let reader = Mutex<(stopping: Bool, stopped: Bool, waiters: [CheckedContinuation<Void, Never>])>(
        (false, false, []))
    private let room = Mutex<Bool>(true)
    /// Writes in progress: the descriptor is closed only once they have left (a closed number may be reused).
    private let writers = InFlightGate()

    /// Creates (or attaches to) the TAP interface `name` ("" lets the kernel choose) with the offloads
    /// checksum, TSO4 and TSO6 accepted from the kernel, and starts reading it.
    ///
    /// OCaml: none (`Tuntap.opentap`)
    public init(name: String = "", frameQueueCapacity: Int = 512) throws(TapError) {
        let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .open(name: name, errno: errno) }
        var chosen = [CChar](repeating: 0, count: Int(IFNAMSIZ) + 1)
        let flags = Int16(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        guard cxen_tun_set_iff(fd, name, flags, &chosen) == 0 else {
            let code = errno
            close(fd)
            throw .open(name: name, errno: code)
        }
        // What we take from the kernel: partial checksums and TCP segmentation offload (netif carries both).
        _ = cxen_tun_set_offload(fd, UInt32(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6))
        let wake: WakeSignal
        do { wake = try WakeSignal() } catch {
            close(fd)
            throw .open(name: name, errno: error.errno)
        }
        let interface = String(decoding: chosen.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.name = interface
        self.descriptor = fd
        self.wake = wake
        self.frames = FrameQueue(capacity: frameQueueCapacity)
        self.mac = Self.sysfs(interface, "address").flatMap { MACAddress($0) } ?? .local(seed: UInt64(fd))
        self.mtu = Self.sysfs(interface, "mtu").flatMap { Int($0) } ?? Netif.defaultMTU
        frames.setSpaceHandler { [weak self] in self?.resume() }
        let status = DetachedThread.spawn { [self] in readLoop() }
        guard status == 0 else {
            close(fd)
            throw .thread(status)
        }
    }

    private static func sysfs(_ interface: String, _ file: String) -> String? {
        let fd = open("/sys/class/net/\(interface)/\(file)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return String(decoding: buffer.prefix(count), as: UTF8.self).filter { !$0.isWhitespace }
    }

    // MARK: - Reading (one thread)

    private func readLoop() {
        let buffer = PageBuffer(pages: 17)
        var fds = [
            pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0), wake.pollEntry,
        ]
        while true {
            if reader.withLock({ $0.stopping }) { break }
            if !room.withLock({ $0 }) || frames.isFull {
                room.withLock { $0 = false }
                // Wait for the reader to make room (or a stop): only the wake pipe.
                var wakeOnly = [fds[1]]
                _ = poll(&wakeOnly, 1, 100)
                wake.drain()
                continue
            }
            let ready = poll(&fds, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if fds[1].revents != 0 { wake.drain() }
            guard fds[0].revents & Int16(POLLIN) != 0 else {
                if fds[0].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { break }
                continue
            }
            let count = read(descriptor, buffer.pointer, buffer.count)
            guard count > VirtioNetHeader.size else {
                if count < 0, errno != EINTR, errno != EAGAIN { break }
                continue
            }
            let header = VirtioNetHeader(decoding: buffer)
            let data = PageBuffer(
                copying: UnsafeRawBufferPointer(
                    start: buffer.pointer + VirtioNetHeader.size, count: count - VirtioNetHeader.size))
            counters.received(data.count)
            frames.offer(NetworkFrame(data: data, checksum: header.checksum, gso: header.gso))
        }
        let waiters = reader.withLock { state in
            state.stopped = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        frames.finish()
        for waiter in waiters { waiter.resume() }
    }

    private func resume() {
        room.withLock { $0 = true }
        wake.signal()
    }

    // MARK: - NetworkDevice

    /// 64 KiB (the kernel segments GSO frames written here).
    public var maxFrameSize: Int { Netif.maxFrameSize }

    /// Injects a frame into the kernel as received on the interface, with its offload metadata.
    ///
    /// OCaml: `Netif.write` (mirage-net-unix)
    public func write(
        size: Int, checksum: NetworkChecksum, gso: NetworkGSO?, fill: (PageBuffer) -> Int
    ) async throws(NetworkError) {
        guard !reader.withLock({ $0.stopping }), writers.enter() else { throw .disconnected }
        defer { writers.leave() }
        guard size >= 0, size <= maxFrameSize else { throw .frameTooLarge(size: size, limit: maxFrameSize) }
        let buffer = scratch.take(size + VirtioNetHeader.size)
        defer { scratch.give(buffer) }
        let frame = buffer.slice(from: VirtioNetHeader.size, count: size)
        let length = fill(frame)
        guard length >= 0, length <= size else { throw .invalidLength(returned: length, size: size) }
        guard length > 0 else { return }
        guard let header = VirtioNetHeader(for: frame.slice(from: 0, count: length), checksum: checksum, gso: gso)
        else {
            counters.count(\.txDropped)
            throw .unimplemented("offload for a frame that is not TCP/UDP over IP")
        }
        header.encode(into: buffer)
        let written = Glibc.write(descriptor, buffer.pointer, VirtioNetHeader.size + length)
        guard written == VirtioNetHeader.size + length else {
            counters.count(\.txErrors)
            if written < 0, errno == EBADF { throw .disconnected }
            return
        }
        counters.sent(length)
    }

    /// OCaml: `Netif.listen` (mirage-net-unix)
    public func listen(headerSize: Int) -> NetworkFrames {
        NetworkFrames(queue: frames, headerSize: headerSize, counters: counters)
    }

    /// OCaml: `Netif.get_stats_counters`
    public var statistics: NetworkStatistics { counters.snapshot() }

    /// OCaml: `Netif.reset_stats_counters`
    public func resetStatistics() { counters.reset() }

    /// Stops the reader thread (joined), then closes the device: the interface goes away unless persistent.
    ///
    /// OCaml: `Netif.disconnect` (mirage-net-unix: `Tuntap.closetap`)
    public func disconnect() async {
        let first = reader.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first else { return }
        wake.signal()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let stopped = reader.withLock { state -> Bool in
                if state.stopped { return true }
                state.waiters.append(continuation)
                return false
            }
            if stopped { continuation.resume() }
        }
        await writers.close()
        close(descriptor)
    }
}
