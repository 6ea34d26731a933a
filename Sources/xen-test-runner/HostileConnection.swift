import BlkifProtocol
import BlockFront
import EventChannel
import GrantTable
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What the hostile guest opens once (`xen-test-runner hostile-guest`, inside the domU): xenstore through
/// the xenbus device, gntalloc to share its pages with dom0, evtchn for its ports.
/// (The unit tests hand it a simulated domain's instead: Tests/XenTestRunnerTests.)
struct GuestDevices: Sendable {
    let client: XenStoreClient
    let bus: XenStoreBus
    let gntshr: any GntshrBackend
    let events: any EventChannelBackend

    static func open() async throws -> GuestDevices {
        let client = try await XenStoreClient.make()
        return GuestDevices(
            client: client, bus: XenStoreBus(client: client), gntshr: try XenGntshr(), events: try XenEventChannel())
    }
}

/// One blkif connection attempt of the hostile guest, built by hand so that every index and every entry can
/// be abused: a one-page ring and data pages shared with dom0 through gntalloc, an unbound event channel, and
/// the ring's indices kept here rather than in a ``FrontRing`` (which would refuse to misbehave).
final class HostileConnection {
    /// How the ring itself is offered.
    enum RingOffer: Sendable {
        case normal
        /// ring-ref names a grant that does not exist.
        case neverGranted
        /// The ring page is granted read-only (the backend must write responses).
        case readOnly
        /// event-channel names a port that is not an unbound port for dom0.
        case bogusPort
    }

    static let ringSize: UInt32 = 32  // (4096 - 64) / 112, rounded down to a power of two
    static let entrySize = Blkif.ringEntrySize
    /// A grant reference far beyond any grant table.
    static let beyondTable = GrantRef(0x00FF_FFF0)

    let devices: GuestDevices
    let front: String
    let back: String
    private var ringShare: SharedPagesHandle?
    /// Four writable data pages, one read-only page, one page granted to a domain that does not exist.
    private(set) var data: SharedPagesHandle?
    private(set) var readOnly: SharedPagesHandle?
    private(set) var foreign: SharedPagesHandle?
    /// A reference shared once and revoked: no longer granted to anyone.
    private(set) var revoked = GrantRef(0)
    private(set) var port: EventChannelPort?
    private(set) var ringRef = GrantRef(0)
    /// Whether to offer `feature-persistent` (the backend then keeps our grants mapped across requests).
    var persistent = false
    /// Our private request producer and response consumer.
    var requestProducer: UInt32 = 0
    var responseConsumer: UInt32 = 0

    init(devices: GuestDevices, front: String, back: String) {
        self.devices = devices
        self.front = front
        self.back = back
    }

    /// The ring memory (a view of the shared page; dropped before the page is unshared).
    var ring: PageBuffer {
        get throws { try unwrap(ringShare, "no ring page").buffer }
    }

    // MARK: - Set-up and handshake

    /// Shares the pages and allocates the port (per `offer`), initialises the ring header.
    func setUp(_ offer: RingOffer) throws {
        let gntshr = devices.gntshr
        let share = SharedPagesHandle(try gntshr.sharePages(with: .dom0, count: 1, writable: offer != .readOnly))
        ringShare = share
        let memory = share.buffer
        memory.fill(0)
        memory.setUInt32(1, at: 4)  // req_event
        memory.setUInt32(1, at: 12)  // rsp_event
        data = SharedPagesHandle(try gntshr.sharePages(with: .dom0, count: 4, writable: true))
        readOnly = SharedPagesHandle(try gntshr.sharePages(with: .dom0, count: 1, writable: false))
        foreign = SharedPagesHandle(try gntshr.sharePages(with: DomainID(1000), count: 1, writable: true))
        // Last: the kernel's free list hands a released reference out again first, and nothing is shared
        // after this one in the attempt.
        let once = SharedPagesHandle(try gntshr.sharePages(with: .dom0, count: 1, writable: true))
        revoked = once.refs[0]
        try once.unshare()
        ringRef = offer == .neverGranted ? revoked : share.refs[0]
        let bound = try devices.events.bindUnboundPort(remote: .dom0)
        port = bound
        if offer == .bogusPort { portText = "4000" } else { portText = "\(bound)" }
    }
    private var portText = ""

    /// Publishes ring-ref, event-channel and protocol with state Initialised once the backend waits for them;
    /// returns the backend's state after that: Connected, or Closing/Closed when it refused.
    func offer() async throws -> XenbusState? {
        let bus = devices.bus
        let offered = try await within(60, "the backend to offer the device") { [back] in
            try await bus.waitForState(of: back, orGone: true) { $0 != .initialising && $0 != .unknown }
        }
        guard offered == .initWait || offered == .connected else { return offered }
        try await bus.write([
            (front + "/ring-ref", "\(ringRef)"), (front + "/event-channel", portText),
            (front + "/protocol", Blkif.protocolX86_64), (front + "/feature-persistent", persistent ? "1" : "0"),
            (front + "/state", XenbusState.initialised.xenstoreValue),
        ])
        return try await within(60, "the backend to answer Initialised") { [back] in
            try await bus.waitForState(of: back, orGone: true) {
                $0 == .connected || $0 == .closing || $0 == .closed
            }
        }
    }

    // MARK: - The ring, by hand

    /// The next request slot (112 bytes, zeroed), counted as produced.
    func nextSlot() throws -> PageBuffer {
        let slot = try ring.slice(
            from: 64 + Int(requestProducer % Self.ringSize) * Self.entrySize, count: Self.entrySize)
        slot.fill(0)
        requestProducer &+= 1
        return slot
    }

    /// Sets the shared `req_prod` (to `value`, or to our producer) and notifies the backend.
    func publish(requestProducer value: UInt32? = nil) throws {
        try ring.setUInt32(value ?? requestProducer, at: 0)
        try notify()
    }

    func notify() throws {
        if let port { try devices.events.notify(port) }
    }

    /// Waits until the backend answered everything produced, re-notifying every second (a hostile guest may
    /// have written an `rsp_event` that tells the backend not to notify), then reads the answers. A `rsp_prod`
    /// claiming more than was asked (garbage this guest wrote itself) counts as not yet answered: the backend
    /// overwrites it with its own index on its next response.
    func responses(within seconds: Int = 30) async throws -> [BlkifResponse] {
        let deadline = ContinuousClock.now + .seconds(seconds)
        var lastKick = ContinuousClock.now
        while true {
            let produced = try ring.uint32(at: 8)
            if produced == requestProducer { break }
            try require(
                ContinuousClock.now < deadline,
                "rsp_prod \(produced) after \(seconds)s: not all of the \(requestProducer &- responseConsumer) "
                    + "requests outstanding were answered (req_prod \(requestProducer))")
            if ContinuousClock.now - lastKick > .seconds(1) {
                try notify()
                lastKick = ContinuousClock.now
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        var answers: [BlkifResponse] = []
        while responseConsumer != requestProducer {
            let slot = try ring.slice(
                from: 64 + Int(responseConsumer % Self.ringSize) * Self.entrySize, count: Blkif.responseSize)
            answers.append(try BlkifResponse.decode(from: slot))
            responseConsumer &+= 1
        }
        return answers
    }

    /// Waits up to `seconds` for the backend to leave Connected (it disconnected us): its state then.
    func backendLeftConnected(within seconds: Int) async throws -> XenbusState? {
        let bus = devices.bus
        return try await within(seconds, "the backend to disconnect") { [back] in
            try await bus.waitForState(of: back, orGone: true) { $0 == .closing || $0 == .closed }
        }
    }

    // MARK: - Close and release

    /// The frontend's close: Closing, then (once the backend let go) Closed; then every share and the port go.
    func close() async throws {
        let bus = devices.bus
        let state = try await bus.state(of: back)
        if state == .connected {
            try await bus.write(front + "/state", XenbusState.closing.xenstoreValue)
            _ = try await backendLeftConnected(within: 60)
            _ = try await within(60, "the backend to reach Closed") { [back] in
                try await bus.waitForState(of: back, orGone: true) { $0 == .closed }
            }
        }
        try await bus.write(front + "/state", XenbusState.closed.xenstoreValue)
        release()
    }

    /// Unbinds the port and unshares every page (gntalloc defers a page dom0 still maps until it unmaps).
    func release() {
        if let port { try? devices.events.unbind(port) }
        port = nil
        for share in [ringShare, data, readOnly, foreign] { try? share?.unshare() }
        ringShare = nil
        data = nil
        readOnly = nil
        foreign = nil
    }
}
