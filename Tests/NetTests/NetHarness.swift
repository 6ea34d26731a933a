import BlockFront
import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport
import Xenbus

/// A guest (frontend) and a driver domain (backend) on one simulated hypervisor, sharing an in-memory
/// xenstored, with the vif nodes written by the toolstack helper.
struct NetHarness {
    let vif: SimulatedVif
    var hypervisor: SimulatedHypervisor { vif.host.hypervisor }
    var server: XenStoreServer { vif.host.xenstored }
    /// The toolstack's and the backend's connection (dom0).
    var store: any XenbusStore { vif.host.dom0Bus }
    /// The guest's connection: it may only touch what the vif permissions allow.
    var frontStore: any XenbusStore { vif.guest.bus }
    var backDomain: SimulatedDomain { vif.host.dom0Domain }
    var frontDomain: SimulatedDomain { vif.guest.domain }
    var nodes: VirtualInterfaceNodes { vif.nodes }

    static let guestMAC = MACAddress("00:16:3e:00:00:01")!

    init(mtu: Int? = nil, handle: UInt32 = 0, grantTableSize: Int = 8192) throws {
        let host = SimulatedHost(hypervisor: SimulatedHypervisor(grantTableSize: grantTableSize))
        vif = SimulatedVif(host: host, guest: try host.createGuest(), handle: handle, mac: Self.guestMAC, mtu: mtu)
    }

    /// Writes the vif nodes, opens the backend and starts serving it.
    func startBackend(_ configure: (inout NetBackOptions) -> Void = { _ in }) async throws -> (
        NetBack, Task<Void, any Error>
    ) {
        try await vif.startBackend(configure)
    }

    func connectFront(_ configure: (inout NetFrontOptions) -> Void = { _ in }) async throws -> NetFront {
        try await vif.connectFront(configure)
    }

    /// Both ends connected.
    func connect(
        back configureBack: (inout NetBackOptions) -> Void = { _ in },
        front configureFront: (inout NetFrontOptions) -> Void = { _ in }
    ) async throws -> (NetFront, NetBack, Task<Void, any Error>) {
        let (back, serving) = try await startBackend(configureBack)
        let front = try await connectFront(configureFront)
        try await waitUntil { back.negotiated != nil }
        return (front, back, serving)
    }

    /// Frontend disconnects, the backend is told to stop, and both are checked to have released everything.
    func tearDown(_ front: NetFront, _ back: NetBack, _ serving: Task<Void, any Error>) async throws {
        await front.disconnect()
        await back.disconnect()
        try await serving.value
    }
}

/// Polls `condition` every millisecond for up to `seconds`.
func waitUntil(seconds: Double = 10, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(1))
    }
    struct TimedOut: Error {}
    throw TimedOut()
}

/// An Ethernet frame of `size` bytes to `destination`: an IPv4/UDP header when it fits, then a pattern
/// derived from `seed`, so the receiver can recompute what it should hold.
func testFrame(size: Int, seed: UInt32, from source: MACAddress, to destination: MACAddress) -> PageBuffer {
    let frame = PageBuffer(pages: max(1, (size + 4095) / 4096)).slice(from: 0, count: size)
    fillTestFrame(frame, seed: seed, from: source, to: destination)
    return frame
}

/// Writes the frame ``testFrame(size:seed:from:to:)`` describes into `frame`.
func fillTestFrame(_ frame: PageBuffer, seed: UInt32, from source: MACAddress, to destination: MACAddress) {
    let size = frame.count
    destination.write(to: frame, at: 0)
    source.write(to: frame, at: 6)
    frame.setUInt16(UInt16(0x88B5).byteSwapped, at: 12)  // the IEEE "local experimental" ethertype
    var value = seed &* 2_654_435_761
    var offset = 14
    if offset + 4 <= size {
        frame.setUInt32(seed, at: offset)
        offset += 4
    }
    while offset + 4 <= size {
        value = value &* 1_103_515_245 &+ 12345
        frame.setUInt32(value, at: offset)
        offset += 4
    }
    while offset < size {
        frame.setUInt8(UInt8(truncatingIfNeeded: value >> 24), at: offset)
        offset += 1
    }
}

/// The seed a test frame carries (after its Ethernet header).
func testSeed(_ frame: PageBuffer) -> UInt32? { frame.count >= 18 ? frame.uint32(at: 14) : nil }

/// True when `frame` holds exactly what ``testFrame(size:seed:from:to:)`` wrote for its seed.
func isTestFrame(_ frame: PageBuffer, from source: MACAddress, to destination: MACAddress) -> Bool {
    guard let seed = testSeed(frame) else { return false }
    return frame.contentsEqual(testFrame(size: frame.count, seed: seed, from: source, to: destination))
}

/// A TCP/IPv4 frame of `payload` bytes with a blank checksum (the pseudo-header sum in the field).
func tcpFrame(payload: Int, seed: UInt8, from source: MACAddress, to destination: MACAddress) -> PageBuffer {
    let size = 14 + 20 + 20 + payload
    let frame = PageBuffer(pages: (size + 4095) / 4096).slice(from: 0, count: size)
    destination.write(to: frame, at: 0)
    source.write(to: frame, at: 6)
    frame.setUInt16(UInt16(0x0800).byteSwapped, at: 12)
    let ip: [UInt8] = [
        0x45, 0, UInt8((size - 14) >> 8), UInt8((size - 14) & 0xFF), 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0,
        2,
    ]
    for (index, byte) in ip.enumerated() { frame.setUInt8(byte, at: 14 + index) }
    let tcp: [UInt8] = [0x30, 0x39, 0x1F, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
    for (index, byte) in tcp.enumerated() { frame.setUInt8(byte, at: 34 + index) }
    for index in 0..<payload { frame.setUInt8(UInt8(truncatingIfNeeded: index &* 7 &+ Int(seed)), at: 54 + index) }
    FrameChecksum.setPseudoHeader(frame)
    return frame
}
