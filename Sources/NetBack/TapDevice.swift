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
    /// The I/O reactor that reads the device could not be started.
    case thread(Int32)

    public var description: String {
        switch self {
        case .open(let name, let code): "TAP device \(name): \(String(cString: strerror(code)))"
        case .thread(let code): "TAP reader (I/O reactor): \(String(cString: strerror(code)))"
        }
    }
}

/// A Linux TAP interface as a `NetworkDevice`: frames written here appear as received on the interface in
/// the kernel; frames the kernel sends out of the interface come out of ``listen(headerSize:)``. Opened with
/// `IFF_VNET_HDR`, so checksum and segmentation offload metadata cross in both directions (``VirtioNetHeader``).
///
/// XenCore's shared `IOReactor` reads the device when it is readable (blocking reads never sit on the
/// cooperative pool): while the reader of ``listen(headerSize:)`` is behind, the device is not polled and the
/// kernel queues (and, past its queue, drops and counts) frames, as for any slow NIC.
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
    private let reactor: IOReactor
    private let frames: FrameQueue
    private let counters = NetworkCounters()
    private let scratch = ScratchBuffers()
    private let reader = Mutex<(stopping: Bool, registration: IOReactorRegistration?)>((false, nil))
    /// Whether the frame queue has room; changed with the registration's events under this lock, so a
    /// resume never crosses a pause.
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
        let reactor: IOReactor
        do { reactor = try IOReactor.shared() } catch {
            close(fd)
            throw .thread(error.errno)
        }
        let interface = String(decoding: chosen.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.name = interface
        self.descriptor = fd
        self.reactor = reactor
        self.frames = FrameQueue(capacity: frameQueueCapacity)
        self.mac = Self.sysfs(interface, "address").flatMap { MACAddress($0) } ?? .local(seed: UInt64(fd))
        self.mtu = Self.sysfs(interface, "mtu").flatMap { Int($0) } ?? Netif.defaultMTU
        frames.setSpaceHandler { [weak self] in self?.resume() }
        let buffer = PageBuffer(pages: 17)
        do {
            let registration = try reactor.register(fd, events: Int16(POLLIN)) { [weak self] revents in
                self?.readReady(revents, into: buffer) ?? false
            }
            reader.withLock { $0.registration = registration }
        } catch {
            close(fd)
            throw .thread(error.errno)
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

    // MARK: - Reading (on the reactor's thread)

    /// One readable round of the device: one frame into the queue. Pauses polling while the queue is full
    /// (``resume()`` polls again); false stops polling (the device failed).
    private func readReady(_ revents: Int16, into buffer: PageBuffer) -> Bool {
        guard revents & Int16(POLLIN) != 0 else { return false }
        if frames.isFull {
            let paused = room.withLock { room -> Bool in
                // Full now, and no resume can slip in between: the space handler takes this lock too.
                guard frames.isFull else { return false }
                room = false
                if let registration = reader.withLock({ $0.registration }) { reactor.setEvents(0, for: registration) }
                return true
            }
            if paused { return true }
        }
        let count = read(descriptor, buffer.pointer, buffer.count)
        guard count > VirtioNetHeader.size else {
            return count >= 0 || errno == EINTR || errno == EAGAIN
        }
        let header = VirtioNetHeader(decoding: buffer)
        let data = PageBuffer(
            copying: UnsafeRawBufferPointer(
                start: buffer.pointer + VirtioNetHeader.size, count: count - VirtioNetHeader.size))
        counters.received(data.count)
        frames.offer(NetworkFrame(data: data, checksum: header.checksum, gso: header.gso))
        return true
    }

    /// Room in the frame queue again: poll the device again if it was paused.
    private func resume() {
        room.withLock { room in
            guard !room else { return }
            room = true
            if let registration = reader.withLock({ $0.registration }) {
                reactor.setEvents(Int16(POLLIN), for: registration)
            }
        }
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

    /// Stops reading (the reactor no longer touches the device once this returns), then closes the device: the
    /// interface goes away unless persistent.
    ///
    /// OCaml: `Netif.disconnect` (mirage-net-unix: `Tuntap.closetap`)
    public func disconnect() async {
        let registration = reader.withLock { state -> IOReactorRegistration?? in
            guard !state.stopping else { return nil }
            state.stopping = true
            defer { state.registration = nil }
            return .some(state.registration)
        }
        guard let registration else { return }
        if let registration { reactor.deregister(registration) }
        frames.finish()
        await writers.close()
        close(descriptor)
    }
}
