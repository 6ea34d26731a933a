import CXen
public import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// A raw `AF_PACKET` socket on one network interface: it sends whole Ethernet frames out of the interface
/// and receives every frame the interface sees (both directions). What a bridge port is to the kernel; the
/// tests and the real-Xen tier use it to look at a TAP device or a `vifN.M` from the kernel's side.
///
/// OCaml: none (mirage-net-unix's raw socket mode)
public final class PacketSocket: Sendable {
    /// The interface.
    public let interface: String
    /// Its index.
    public let index: Int32
    private let descriptor: Int32

    /// Opens a socket bound to `interface`, receiving every protocol.
    ///
    /// OCaml: none
    public init(interface: String) throws(TapError) {
        let index = Int32(bitPattern: if_nametoindex(interface))
        guard index > 0 else { throw .open(name: interface, errno: ENODEV) }
        let all = UInt16(ETH_P_ALL).bigEndian
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(all))
        guard fd >= 0 else { throw .open(name: interface, errno: errno) }
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = all
        address.sll_ifindex = index
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
            }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw .open(name: interface, errno: code)
        }
        self.interface = interface
        self.index = index
        self.descriptor = fd
    }

    deinit { close(descriptor) }

    /// Brings the interface up or down (`IFF_UP`).
    ///
    /// OCaml: none (`ip link set dev <interface> up`)
    public func setLinkUp(_ up: Bool) throws(TapError) {
        guard cxen_set_link_up(descriptor, interface, up ? 1 : 0) == 0 else {
            throw .open(name: interface, errno: errno)
        }
    }

    /// Sends one frame out of the interface; false when the kernel refused it.
    ///
    /// OCaml: none
    public func send(_ frame: PageBuffer) -> Bool {
        Glibc.send(descriptor, frame.pointer, frame.count, 0) == frame.count
    }

    /// The next frame the interface sees within `milliseconds` that `accept` wants (a blocking call: run it
    /// off the cooperative pool), or nil at the deadline.
    ///
    /// OCaml: none
    public func receive(within milliseconds: Int, where accept: (PageBuffer) -> Bool) -> PageBuffer? {
        let buffer = PageBuffer(pages: 17)
        let end = Int(MonotonicClock.nanoseconds() / 1_000_000) + milliseconds
        while true {
            let left = end - Int(MonotonicClock.nanoseconds() / 1_000_000)
            guard left > 0 else { return nil }
            var fds = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&fds, 1, Int32(left)) > 0 else { continue }
            let count = recv(descriptor, buffer.pointer, buffer.count, 0)
            guard count > 0 else { continue }
            let frame = buffer.slice(from: 0, count: count)
            if accept(frame) { return PageBuffer(copying: frame.bytes) }
        }
    }

    /// Turns IPv6 off on `interface` (`disable_ipv6`), so bringing it up assigns no link-local address and
    /// sends no router solicitations: interfaces the tests create carry no address at all.
    ///
    /// OCaml: none
    public static func disableIPv6(_ interface: String) -> Bool {
        let fd = open("/proc/sys/net/ipv6/conf/\(interface)/disable_ipv6", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Glibc.write(fd, "1", 1) == 1
    }
}
