public import GrantTable
public import NetifProtocol
public import XenCore

/// What a network frontend asks for. Features are offered to the backend, which may refuse them.
///
/// OCaml: `Features.supported` (mirage-net-xen's frontend offers rx-copy, rx-notify, sg, gso-tcpv4)
public struct NetFrontOptions: Sendable {
    /// This domain (the frontend directory is `/local/domain/<domain>/device/<deviceClass>/<id>`).
    public var domain: DomainID
    /// Queues to ask for (capped by `multi-queue-max-queues`).
    public var queues = 1
    /// Use separate tx and rx event channels when the backend offers them.
    public var splitEventChannels = true
    /// Accept frames over several rx slots (`feature-sg`); also needed to send frames over several tx slots.
    public var scatterGather = true
    /// Accept and send TCPv4 segmentation offload (`feature-gso-tcpv4`).
    public var gsoTCPv4 = true
    /// Accept and send TCPv6 segmentation offload (`feature-gso-tcpv6`).
    public var gsoTCPv6 = true
    /// Refuse IPv4 frames with blank checksums (`feature-no-csum-offload`).
    public var noChecksumOffload = false
    /// Accept IPv6 frames with blank checksums (`feature-ipv6-csum-offload`).
    public var ipv6ChecksumOffload = true
    /// Ask the backend to filter multicast frames (`request-multicast-control`).
    public var multicastControl = false
    /// Pages posted for received fragments, per queue (at most the rx ring's 256 entries). Each frame up to
    /// 64 KiB takes up to 17.
    public var rxBuffers = 256
    /// Pages for transmitted fragments, per queue (at most the tx ring's 256 entries).
    public var txBuffers = 256
    /// Frames received and not yet read before the rings are held back.
    public var frameQueueCapacity = 512
    /// Fill in blank checksums of received frames (delivering them as `.validated`), for readers that check
    /// every checksum; off, they arrive as `.blank`.
    public var completeBlankChecksums = true
    /// Share pages through this gntshr interface instead of `grantAccess` (see `PageExport`).
    public var gntshr: (any GntshrBackend)?
    /// The device class of the frontend directory: another class keeps a kernel xen-netfront of the same
    /// domain away from the device (the backend finds us through its `frontend` key).
    public var deviceClass = "vif"
    /// How long ``NetFront/disconnect()`` waits for the backend at each step of the close handshake.
    public var closeTimeout: Duration = .seconds(10)

    /// Defaults close to Linux xen-netfront's: one queue, every feature.
    public init(domain: DomainID) { self.domain = domain }
}

/// Why connecting a network frontend failed.
///
/// OCaml: `Netif.connect` fails with `Failure` ("device %s not found", xenstore exceptions)
public enum NetFrontError: Error, Sendable, CustomStringConvertible {
    /// The id is not a vif handle, or the vif's frontend directory has no backend.
    case unknownDevice(String)
    /// A xenstore operation failed at `path`; `underlying` is the xenstore seam's own error (`XenStoreError`
    /// through `XenStoreBus`).
    case xenstore(path: String, underlying: any Error)
    /// A key is absent or malformed.
    case badKey(NetifKeyError, path: String)
    /// The backend went to a state the handshake cannot continue from.
    case backendState(XenbusState?, path: String)
    /// The backend does not offer what netif.h requires of it (`feature-rx-copy`).
    case unsupportedBackend(String)
    /// Granting ring or buffer pages, or binding event channels, failed. `underlying`: the grant table's or event
    /// channel's error, when one caused it.
    case resources(String, underlying: (any Error)? = nil)

    public var description: String {
        switch self {
        case .unknownDevice(let name): "unknown network device \"\(name)\""
        case .xenstore(let path, let underlying): "xenstore \(path): \(underlying)"
        case .badKey(let error, let path): "\(path): \(error)"
        case .backendState(let state, let path): "backend \(path) went to state \(state.map(\.description) ?? "gone")"
        case .unsupportedBackend(let why): "backend unsupported: \(why)"
        case .resources(let why, let underlying):
            "network frontend resources: \(why)" + (underlying.map { ": \($0)" } ?? "")
        }
    }
}
