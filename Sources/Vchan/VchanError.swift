public import EventChannel
public import GrantTable
public import XenCore
public import XenStoreClient

/// Why a vchan operation failed. The peer is untrusted: anything it makes impossible (indices, orders, live
/// bytes, xenstore values) is a typed error that closes this vchan only, never a trap or a silent hang.
///
/// OCaml: `Vchan.Endpoint.error` (`Unknown of string` (polymorphic variant)) and `Eof` (polymorphic variant); the C library's `-1`
public enum VchanError: Error, Sendable, Equatable, CustomStringConvertible {
    // MARK: - A hostile or broken peer

    /// The peer's producer index is more than a ring ahead of our consumer index (or behind it).
    ///
    /// OCaml: none (the C library locks up the ring instead: Qubes #10833)
    case producerOutOfRange(producer: UInt32, consumer: UInt32, size: Int)
    /// The peer's consumer index is ahead of our producer index, or more than a ring behind it.
    ///
    /// OCaml: none (as above)
    case consumerOutOfRange(producer: UInt32, consumer: UInt32, size: Int)
    /// A live byte holds something other than 0, 1 or 2 (or 2 in the server's byte).
    ///
    /// OCaml: `Invalid_argument "cli_live"` / `"srv_live"` raised by `Endpoint.state`
    case invalidLiveState(UInt8)
    /// The shared page names ring orders outside 10...20, or two rings in the same place of the page.
    ///
    /// OCaml: `Failure "Invalid ring order"` from `Location.of_order`
    case invalidRingOrders(left: Int, right: Int)
    /// A xenstore node the server published holds something unparsable.
    ///
    /// OCaml: `Failure` from `int_of_string` / `E.port_of_string`
    case invalidValue(path: String, value: String)

    // MARK: - Lifecycle

    /// This end was closed: no more reads or writes.
    ///
    /// OCaml: `Eof` (polymorphic variant) after `Endpoint.close`
    case closed
    /// The peer's live byte says it has gone: it closed, or its process died and the kernel's unmap
    /// notification cleared the byte. Reads first deliver what is left in the ring.
    ///
    /// OCaml: `Eof` (polymorphic variant) (`Endpoint.state <> Connected`)
    case peerClosed
    /// The peer's domain was destroyed (it can no longer close anything itself).
    ///
    /// OCaml: none (ocaml-vchan #65: the survivor hangs)
    case peerDied(DomainID)
    /// The peer made no room in our send ring for this long while we waited to write (or, while
    /// connecting, never arrived): it is treated as gone and the vchan closed.
    ///
    /// OCaml: none (waits forever)
    case peerStalled(waited: Duration)
    /// A wait given a time limit (connecting, accepting) ran out.
    ///
    /// OCaml: none
    case timedOut(operation: String)
    /// The waiting task was cancelled.
    ///
    /// OCaml: `Lwt.Canceled`
    case cancelled

    // MARK: - Configuration

    /// A server asked for a ring above libxenvchan's 1 MiB maximum (or a negative size).
    ///
    /// OCaml: none (`Location.of_lengths` caps silently); C: `libxenvchan_server_init` returns NULL
    case ringTooLarge(requested: Int, maximum: Int)
    /// A port name outside `[a-zA-Z0-9_-]+`.
    ///
    /// OCaml: `Vchan.Port.of_string` returning `Error` (polymorphic variant)
    case invalidPort(String)

    // MARK: - The IO seam

    /// A xenstore operation of the rendezvous failed.
    ///
    /// OCaml: the exceptions of `Xs_client_lwt`
    case xenstore(op: String, path: String, underlying: XenStoreError)
    /// Sharing or mapping the pages failed.
    ///
    /// OCaml: the `Failure`s of `Gnt.Gntshr.share_pages_exn` / `Gnt.Gnttab.mapv_exn`
    case grant(op: String, underlying: GrantTableError)
    /// Allocating, binding or signalling the event channel failed.
    ///
    /// OCaml: the exceptions of `Eventchn`
    case eventChannel(op: String, underlying: EventChannelError)
    /// Reading or writing a file descriptor relayed to the vchan failed.
    ///
    /// OCaml: `Unix.Unix_error` in `xencat`
    case file(op: String, errno: Int32)

    /// Whether the peer broke the protocol (as opposed to leaving, or a local failure).
    public var isProtocolViolation: Bool {
        switch self {
        case .producerOutOfRange, .consumerOutOfRange, .invalidLiveState, .invalidRingOrders, .invalidValue: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .producerOutOfRange(let producer, let consumer, let size):
            "vchan peer's producer index \(producer) is out of range (our consumer \(consumer), ring \(size))"
        case .consumerOutOfRange(let producer, let consumer, let size):
            "vchan peer's consumer index \(consumer) is out of range (our producer \(producer), ring \(size))"
        case .invalidLiveState(let value): "vchan live byte holds \(value)"
        case .invalidRingOrders(let left, let right): "invalid vchan ring orders \(left)/\(right)"
        case .invalidValue(let path, let value): "invalid value \(value.debugDescription) at \(path)"
        case .closed: "vchan closed"
        case .peerClosed: "vchan peer closed"
        case .peerDied(let domain): "vchan peer domain \(domain) was destroyed"
        case .peerStalled(let waited): "vchan peer made no progress for \(waited)"
        case .timedOut(let operation): "timed out: \(operation)"
        case .cancelled: "cancelled"
        case .ringTooLarge(let requested, let maximum): "vchan ring of \(requested) bytes (maximum \(maximum))"
        case .invalidPort(let port): "invalid vchan port \(port.debugDescription) (must match [a-zA-Z0-9_-]+)"
        case .xenstore(let op, let path, let underlying): "xenstore \(op) \(path): \(underlying)"
        case .grant(let op, let underlying): "grant \(op): \(underlying)"
        case .eventChannel(let op, let underlying): "event channel \(op): \(underlying)"
        case .file(let op, let errno): "\(op): errno \(errno)"
        }
    }
}
