public import NetifProtocol
public import XenCore

/// What a frame's TCP/UDP checksum is known to be.
///
/// OCaml: none (Mirage_net frames carry no metadata; these are netif.h's `csum_blank`/`data_validated` and
/// Linux's `CHECKSUM_PARTIAL`/`CHECKSUM_UNNECESSARY`)
public enum NetworkChecksum: Sendable, Equatable {
    /// Nothing is known: a receiver checks it (the default).
    case unverified
    /// Checked (or computed) by the sender: correct.
    case validated
    /// Left blank for offload: the field holds the pseudo-header sum, the data is trusted. A device whose
    /// peer cannot take blank checksums fills them in first.
    case blank
}

/// Segmentation offload: a frame larger than the MTU that the receiver cuts into `segmentSize`-byte TCP
/// segments.
///
/// OCaml: `Extra.t` of type GSO (mirage-net-xen)
public struct NetworkGSO: Sendable, Equatable {
    /// TCP over IPv4 or IPv6.
    public var type: NetifGSOType
    /// The payload bytes per segment (the path MSS).
    public var segmentSize: Int

    /// A GSO description.
    public init(type: NetifGSOType, segmentSize: Int) {
        self.type = type
        self.segmentSize = segmentSize
    }

    /// The GSO description a TCP frame larger than `mtu` needs: the MSS is the MTU less this frame's own IP
    /// and TCP headers (options included); nil when the frame fits or is not TCP.
    ///
    /// OCaml: `Unified_TX_Ops.tcpv4_mss` (IPv4 only there)
    public static func derive(for frame: PageBuffer, mtu: Int) -> NetworkGSO? {
        guard frame.count > mtu + Netif.ethernetHeaderSize, let layout = FrameLayout(frame),
            layout.transportProtocol == FrameLayout.tcp
        else { return nil }
        let headers = layout.headerLength - layout.networkOffset
        let mss = mtu - headers
        guard mss > 0 else { return nil }
        return NetworkGSO(type: layout.isIPv6 ? .tcpv6 : .tcpv4, segmentSize: mss)
    }
}

/// One received Ethernet frame and what the sender said about it.
///
/// OCaml: the `Cstruct.t` handed to `Mirage_net.S.listen`'s callback
public struct NetworkFrame: Sendable {
    /// The frame, from the destination MAC on.
    public var data: PageBuffer
    /// The checksum state.
    public var checksum: NetworkChecksum
    /// Set for frames above the MTU that carry a GSO descriptor.
    public var gso: NetworkGSO?

    /// A frame.
    public init(data: PageBuffer, checksum: NetworkChecksum = .unverified, gso: NetworkGSO? = nil) {
        self.data = data
        self.checksum = checksum
        self.gso = gso
    }
}

/// Why a network operation failed.
///
/// OCaml: `Mirage_net.Net.error` (`Invalid_length`, `Unimplemented`, `Disconnected`)
public enum NetworkError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The device is not connected (never was, closed, or its peer left).
    case disconnected
    /// `fill` returned more bytes than `size`, or a negative count.
    case invalidLength(returned: Int, size: Int)
    /// A frame larger than the peer accepts (`limit`, which depends on the negotiated features).
    case frameTooLarge(size: Int, limit: Int)
    /// Something the negotiated features do not allow (GSO of a type the peer never offered).
    case unimplemented(String)
    /// The peer broke the protocol: the device disconnected.
    case protocolViolation(String)
    /// The waiting task was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .disconnected: "disconnected"
        case .invalidLength(let returned, let size): "fill returned \(returned) bytes for a \(size)-byte frame"
        case .frameTooLarge(let size, let limit): "frame of \(size) bytes exceeds \(limit)"
        case .unimplemented(let what): "unimplemented: \(what)"
        case .protocolViolation(let why): "peer broke the protocol: \(why)"
        case .cancelled: "cancelled"
        }
    }
}

/// An Ethernet device: frames out with ``write(size:checksum:gso:fill:)``, frames in from ``listen(headerSize:)``.
///
/// Implemented by `NetFront`, `NetBack` and `TapDevice`; ``NetworkBridge`` connects any two.
/// OCaml: `Mirage_net.S`
public protocol NetworkDevice: AnyObject, Sendable {
    /// This device's address.
    ///
    /// OCaml: `Mirage_net.S.mac`
    var mac: MACAddress { get }

    /// The MTU: the largest IP packet without GSO (frames add the 14-byte Ethernet header).
    ///
    /// OCaml: `Mirage_net.S.mtu`
    var mtu: Int { get }

    /// The largest frame ``write(size:checksum:gso:fill:)`` accepts now (with GSO: up to 64 KiB).
    ///
    /// OCaml: `Netif.max_frame_size`
    var maxFrameSize: Int { get }

    /// Sends one frame of at most `size` bytes: `fill` writes it into the buffer it is given and returns its
    /// length. Waits while the ring is full (back-pressure, never a silent drop).
    ///
    /// OCaml: `Mirage_net.S.write t ~size fill`
    func write(size: Int, checksum: NetworkChecksum, gso: NetworkGSO?, fill: (PageBuffer) -> Int)
        async throws(NetworkError)

    /// The frames received, in order per queue, as an async sequence. Frames shorter than `headerSize` are
    /// counted as receive errors and skipped. While nobody reads, the device stops taking frames from its
    /// peer (which then waits), so nothing is dropped for want of a reader.
    ///
    /// OCaml: `Mirage_net.S.listen t ~header_size callback`
    func listen(headerSize: Int) -> NetworkFrames

    /// The counters.
    ///
    /// OCaml: `Mirage_net.S.get_stats_counters`
    var statistics: NetworkStatistics { get }

    /// Zeroes the counters.
    ///
    /// OCaml: `Mirage_net.S.reset_stats_counters`
    func resetStatistics()

    /// Disconnects: the xenbus close handshake (or closing the file), releasing everything; later writes
    /// fail with `.disconnected` and ``listen(headerSize:)`` finishes.
    ///
    /// OCaml: `Mirage_net.S.disconnect`
    func disconnect() async
}

extension NetworkDevice {
    /// Sends a frame with no checksum or GSO metadata.
    ///
    /// OCaml: `Mirage_net.S.write t ~size fill`
    public func write(size: Int, fill: (PageBuffer) -> Int) async throws(NetworkError) {
        try await write(size: size, checksum: .unverified, gso: nil, fill: fill)
    }

    /// Sends a copy of `frame`.
    ///
    /// OCaml: none (`write` with a blit)
    public func write(_ frame: NetworkFrame) async throws(NetworkError) {
        try await write(size: frame.data.count, checksum: frame.checksum, gso: frame.gso) { buffer in
            buffer.copy(from: frame.data)
            return frame.data.count
        }
    }

    /// Frames of at least an Ethernet header.
    ///
    /// OCaml: `Mirage_net.S.listen t ~header_size:14`
    public func listen() -> NetworkFrames { listen(headerSize: Netif.ethernetHeaderSize) }
}
