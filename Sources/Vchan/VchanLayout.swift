/// The byte layout of `struct vchan_interface` (xen/include/public/io/libxenvchan.h): the page a vchan
/// server shares with its client, holding both rings' indices, their sizes, the two "live" bytes, the two
/// notification-request bytes and the grant list of rings that live outside the page.
///
/// `left` is the client→server ring (the server reads it), `right` the server→client ring. VchanTests
/// compare every offset here with the C header through CXen.
///
/// OCaml: `Vchan.Endpoint` (`[%%cstruct] type vchan_interface`, `type ring_shared`)
public enum VchanLayout {
    /// Offset of `left.cons` (client→server ring, advanced by the server).
    public static let leftConsumerOffset = 0
    /// Offset of `left.prod` (advanced by the client).
    public static let leftProducerOffset = 4
    /// Offset of `right.cons` (server→client ring, advanced by the client).
    public static let rightConsumerOffset = 8
    /// Offset of `right.prod` (advanced by the server).
    public static let rightProducerOffset = 12
    /// Offset of `left_order` (`uint16_t`): the left ring holds `1 << left_order` bytes.
    public static let leftOrderOffset = 16
    /// Offset of `right_order` (`uint16_t`).
    public static let rightOrderOffset = 18
    /// Offset of `cli_live`: the client's ``VchanLiveState``.
    public static let clientLiveOffset = 20
    /// Offset of `srv_live`: the server's ``VchanLiveState``.
    public static let serverLiveOffset = 21
    /// Offset of `cli_notify`: what the server asks the client to signal (bits ``notifyWrite``/``notifyRead``).
    public static let clientNotifyOffset = 22
    /// Offset of `srv_notify`: what the client asks the server to signal.
    public static let serverNotifyOffset = 23
    /// Offset of `grants[]`: the left ring's grant references, then the right ring's (one `uint32_t` each).
    public static let grantsOffset = 24
    /// `sizeof(struct vchan_interface)` (the grant list is a flexible array).
    public static let headerSize = 24

    /// `VCHAN_NOTIFY_WRITE`: "send an event when you write (produce) data".
    public static let notifyWrite: UInt8 = 0x1
    /// `VCHAN_NOTIFY_READ`: "send an event when you read (consume) data".
    public static let notifyRead: UInt8 = 0x2

    /// The smallest ring order: 1024 bytes, at offset 1024 of the shared page.
    public static let smallRingOrder = 10
    /// 2048 bytes, at offset 2048 of the shared page.
    public static let largeRingOrder = 11
    /// Where an order-10 ring sits in the shared page.
    public static let smallRingOffset = 1024
    /// Where an order-11 ring sits in the shared page.
    public static let largeRingOffset = 2048
    /// The first order kept in pages of its own (`PAGE_SHIFT`): `1 << (order - 12)` granted pages.
    public static let firstExternalOrder = 12
    /// libxenvchan's `MAX_RING_SHIFT`: 1 MiB per ring (256 grants; both rings' grants fit in the page).
    public static let maximumOrder = 20
    /// libxenvchan's `MAX_RING_SIZE`.
    public static let maximumRingSize = 1 << maximumOrder
}

/// The value of a `cli_live`/`srv_live` byte.
///
/// OCaml: `Vchan.Endpoint.state`
public enum VchanLiveState: UInt8, Sendable, Hashable {
    /// 0: that side closed (or its process died and the kernel's unmap notification cleared the byte).
    case exited = 0
    /// 1: that side is connected.
    case connected = 1
    /// 2: the client has not connected yet (only ever in `cli_live`).
    case waitingForConnection = 2
}

/// Which end of a vchan this is. The server shares the pages and owns the xenstore entries; the client
/// maps them.
///
/// OCaml: `Vchan.Endpoint.role` (`Server`/`Client`)
public enum VchanRole: String, Sendable, Hashable {
    /// Shares the pages (gntshr), allocates the unbound port, publishes both in xenstore.
    case server
    /// Maps the pages (gnttab) and binds to the server's port.
    case client

    /// The byte this side keeps its own ``VchanLiveState`` in.
    var ownLiveOffset: Int { self == .server ? VchanLayout.serverLiveOffset : VchanLayout.clientLiveOffset }
    /// The byte the peer keeps its ``VchanLiveState`` in.
    var peerLiveOffset: Int { self == .server ? VchanLayout.clientLiveOffset : VchanLayout.serverLiveOffset }
    /// Where this side sets bits to ask the peer for events (libxenvchan `request_notify`).
    var requestOffset: Int { self == .server ? VchanLayout.clientNotifyOffset : VchanLayout.serverNotifyOffset }
    /// Where the peer's requests to this side sit (libxenvchan `send_notify` tests and clears them).
    var pendingOffset: Int { self == .server ? VchanLayout.serverNotifyOffset : VchanLayout.clientNotifyOffset }
    /// The indices of the ring this side reads: `left` for the server, `right` for the client.
    var readIndices: (consumer: Int, producer: Int) {
        self == .server
            ? (VchanLayout.leftConsumerOffset, VchanLayout.leftProducerOffset)
            : (VchanLayout.rightConsumerOffset, VchanLayout.rightProducerOffset)
    }
    /// The indices of the ring this side writes.
    var writeIndices: (consumer: Int, producer: Int) {
        self == .server
            ? (VchanLayout.rightConsumerOffset, VchanLayout.rightProducerOffset)
            : (VchanLayout.leftConsumerOffset, VchanLayout.leftProducerOffset)
    }
}
