import BlockBack
import BlockDevice
import BlockFront
import EventChannel
import GrantTable
import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Our BlockBack serving the dom0 kernel's own xen-blkfront: Linux sees /dev/xvda, and what it writes lands
/// in our in-memory disk (and the other way round), through real grants and event channels.
enum BlockBackChecks {
    /// xvda: major 202, minor 0.
    static let virtualDevice = 51712
    static let sectors: UInt64 = 8192  // 4 MiB
    /// `O_DIRECT` on x86-64 Linux (Glibc hides it behind _GNU_SOURCE).
    static let directIO: Int32 = 0o40000

    static func run(_ report: Report) async {
        await report.check("BlockBack: Linux xen-blkfront connects, dd-style I/O round-trips", limit: 180) {
            // Our own xenstore stack drives the handshake: XenStoreClient through the block components' seam.
            let client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
            defer { Task { await client.close() } }
            let bus = XenStoreBus(client: client)
            let attached = try await KernelFrontendDisk.attach(
                virtualDevice: virtualDevice, node: "/dev/xvda", sectors: sectors, bus: bus)
            defer { attached.server.cancel() }
            try await attached.roundTrip()
            try await attached.detach(bus: bus)
        }
    }

    /// Writes through `node` (O_DIRECT: the block layer, not the page cache) and reads our disk; then the
    /// other way round. Sizes cover one segment, a full direct request and more (indirect if negotiated).
    static func roundTrip(_ disk: MemoryBlockDevice, node: String) async throws {
        let fd = open(node, O_RDWR | directIO | O_CLOEXEC)
        try require(fd >= 0, errnoText("open \(node)"))
        defer { close(fd) }
        for (index, (sector, bytes)) in [(8, 4096), (2048, 44 * 1024), (4096, 1024 * 1024)].enumerated() {
            let pattern = PageBuffer(pages: bytes / xenPageSize)
            for offset in stride(from: 0, to: bytes, by: 8) {
                pattern.setUInt64(UInt64(index + 1) << 56 | UInt64(sector) << 32 | UInt64(offset), at: offset)
            }
            let written = try await io("pwrite \(bytes) B at sector \(sector)") {
                pwrite(fd, pattern.pointer, bytes, off_t(sector * 512))
            }
            try require(written == bytes, errnoText("pwrite \(bytes) at sector \(sector) gave \(written)"))
            try require(try await io("fsync") { fsync(fd) == 0 ? 0 : -1 } == 0, errnoText("fsync"))
            let landed = PageBuffer(pages: bytes / xenPageSize)
            try await disk.read(at: UInt64(sector), into: [landed])
            try require(landed.contentsEqual(pattern), "Linux's write of \(bytes) B at \(sector) not in our disk")

            pattern.fill(UInt8(0xA0 + index))
            try await disk.write(at: UInt64(sector), from: [pattern])
            let readBack = PageBuffer(pages: bytes / xenPageSize)
            let read = try await io("pread \(bytes) B at sector \(sector)") {
                pread(fd, readBack.pointer, bytes, off_t(sector * 512))
            }
            try require(read == bytes, errnoText("pread \(bytes) at sector \(sector) gave \(read)"))
            try require(readBack.contentsEqual(pattern), "our disk's \(bytes) B at \(sector) not read by Linux")
        }
    }

    /// Runs one blocking I/O call on a thread of its own, failing the check if it does not finish in 30 s
    /// (a backend that stops answering leaves the caller in uninterruptible sleep).
    static func io(_ what: String, _ call: @escaping @Sendable () -> Int) async throws -> Int {
        try await within(30, what) { await blocking(call) }
    }
}

/// Our BlockBack serving an in-memory disk to the dom0 kernel's own xen-blkfront, which shows it as `node`
/// (the `blockback` group's disk; the `hostile` group's bystander, kept busy while a guest attacks).
struct KernelFrontendDisk: Sendable {
    let backendPath: String
    let frontendPath: String
    let node: String
    let disk: MemoryBlockDevice
    let server: Task<Void, any Error>

    /// Writes both directories (the backend's of a class the kernel's xen-blkback does not serve), starts
    /// `BlockBack.serve` and waits until blkfront connected and `node` opens.
    static func attach(
        virtualDevice: Int, node: String, sectors: UInt64, bus: XenStoreBus
    ) async throws -> KernelFrontendDisk {
        // Not "vbd": the kernel's xen-blkback watches backend/vbd and would serve the device itself.
        let backendPath = "/local/domain/0/backend/swiftxen-vbd/0/\(virtualDevice)"
        let frontendPath = "/local/domain/0/device/vbd/\(virtualDevice)"
        let disk = MemoryBlockDevice(sizeSectors: sectors)
        try await bus.remove(backendPath)
        try await bus.remove(frontendPath)
        try await bus.write([
            (backendPath + "/frontend", frontendPath), (backendPath + "/frontend-id", "0"),
            (backendPath + "/online", "1"), (backendPath + "/state", "1"),
        ])
        let server = Task {
            try await BlockBack.serve(
                disk, backendPath: backendPath, store: bus, grants: try XenGrantTable(),
                events: try XenEventChannel(), options: BlockBackOptions(domain: .dom0))
        }
        let attached = KernelFrontendDisk(
            backendPath: backendPath, frontendPath: frontendPath, node: node, disk: disk, server: server)
        do {
            try await bus.write([
                (frontendPath + "/backend", backendPath), (frontendPath + "/backend-id", "0"),
                (frontendPath + "/virtual-device", "\(virtualDevice)"), (frontendPath + "/device-type", "disk"),
                (frontendPath + "/state", "1"),
            ])
            try await attached.waitConnected(bus: bus, sectors: sectors)
        } catch {
            server.cancel()
            throw error
        }
        return attached
    }

    private func waitConnected(bus: XenStoreBus, sectors: UInt64) async throws {
        let backendPath = backendPath
        let frontendPath = frontendPath
        let node = node
        let connected = try await within(60, "backend Connected") {
            try await bus.waitForState(of: backendPath, orGone: true) { $0 == .connected || $0 == .closed }
        }
        try require(connected == .connected, "backend state \(String(describing: connected))")
        // blkfront announces Connected once its disk is added; the node may still refuse opens (ENXIO)
        // for a moment while the partition scan runs.
        let front = try await within(60, "frontend Connected") {
            try await bus.waitForState(of: frontendPath, orGone: true) { $0 == .connected || $0 == .closed }
        }
        try require(front == .connected, "frontend state \(String(describing: front))")
        try await within(60, "\(node) to open") {
            while true {
                let fd = open(node, O_RDONLY | O_CLOEXEC)
                if fd >= 0 {
                    close(fd)
                    return
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        let name = node.split(separator: "/").last.map(String.init) ?? node
        let sysSize = Files.trimmed("/sys/block/\(name)/size")
        try require(sysSize == "\(sectors)", "Linux sees \(sysSize ?? "?") sectors, want \(sectors)")
    }

    /// Linux writes, we read; we write, Linux reads (``BlockBackChecks/roundTrip(_:node:)``).
    func roundTrip() async throws { try await BlockBackChecks.roundTrip(disk, node: node) }

    /// Orderly close, the toolstack's way: backend to Closing, blkfront follows to Closed, serve returns;
    /// then both directories go.
    func detach(bus: XenStoreBus) async throws {
        try await bus.write(backendPath + "/state", XenbusState.closing.xenstoreValue)
        let server = server
        try await within(60, "BlockBack.serve to return after the frontend closed") { try await server.value }
        try await bus.remove(frontendPath)
        try await bus.remove(backendPath)
    }
}
