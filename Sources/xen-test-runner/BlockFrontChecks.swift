import BlkifProtocol
import BlockDevice
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

/// Our BlockFront (in dom0 userspace, sharing pages through gntalloc) against the dom0 kernel's own
/// xen-blkback serving a loop device: the grants, event channels and blkif protocol of a real guest, with the
/// kernel on the other end.
enum BlockFrontChecks {
    /// xvdb: major 202, minor 16 (xvda is the BlockBack check's).
    static let virtualDevice = 51728
    /// The kernel's xen-blkback serves backend/vbd.
    static let backendPath = "/local/domain/0/backend/vbd/0/\(virtualDevice)"
    /// Not "vbd": the kernel's xen-blkfront watches device/vbd of dom0 and would claim the device itself.
    static let deviceClass = "swiftxen-vbd"
    static let frontendPath = "/local/domain/0/device/\(deviceClass)/\(virtualDevice)"
    /// Attached to /tmp/disk.img by guest-init.sh.
    static let loopDevice = "/dev/loop0"

    static func run(_ report: Report) async {
        await report.check("BlockFront: against Linux xen-blkback over a loop device", limit: 180) {
            let backing = try unwrap(
                Files.trimmed("/sys/block/loop0/loop/backing_file"), "\(loopDevice) is not attached to a file")
            let numbers = try unwrap(Files.trimmed("/sys/block/loop0/dev"), "no /sys/block/loop0/dev")
                .split(separator: ":").compactMap { Int($0) }
            try require(numbers.count == 2, "odd /sys/block/loop0/dev")
            let client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
            defer { Task { await client.close() } }
            let bus = XenStoreBus(client: client)
            try await bus.remove(backendPath)
            try await bus.remove(frontendPath)
            // The toolstack's part (what libxl and the block hotplug script write).
            try await bus.write([
                (frontendPath + "/backend", backendPath), (frontendPath + "/backend-id", "0"),
                (frontendPath + "/virtual-device", "\(virtualDevice)"), (frontendPath + "/device-type", "disk"),
                (frontendPath + "/state", "1"),
                (backendPath + "/frontend", frontendPath), (backendPath + "/frontend-id", "0"),
                (backendPath + "/online", "1"), (backendPath + "/removable", "0"), (backendPath + "/dev", "xvdb"),
                (backendPath + "/type", "phy"), (backendPath + "/mode", "w"), (backendPath + "/params", loopDevice),
                (backendPath + "/state", "1"),
                (
                    backendPath + "/physical-device",
                    String(numbers[0], radix: 16) + ":" + String(numbers[1], radix: 16)
                ),
            ])
            // The one-call form, as Blkfront.connect "51728": xenstore as xs_open finds it, dom0's id from its
            // domid node, XenGrantTable and XenEventChannel. No gntshr option: XenGrantTable cannot export, so
            // BlockFront must pick gntalloc by itself.
            let front = try await within(60, "BlockFront.connect(device:)") {
                try await BlockFront.connect(
                    device: "\(virtualDevice)", options: BlockFrontOptions(queues: 2, deviceClass: deviceClass))
            }
            try require(front.frontendPath == frontendPath, "frontend \(front.frontendPath)")
            // A second connect to the connected device is refused (a fresh xenstore connection: the refusal
            // comes from the frontend's state, Connected).
            do {
                let second = try await within(30, "second BlockFront.connect(device:)") {
                    try await BlockFront.connect(
                        device: "\(virtualDevice)", options: BlockFrontOptions(deviceClass: deviceClass))
                }
                await second.disconnect()
                await front.disconnect()
                throw CheckFailure("a second connect to a connected device succeeded")
            } catch let error as BlockFrontError {
                guard case .alreadyConnected(let path) = error, path == frontendPath else {
                    await front.disconnect()
                    throw CheckFailure("second connect: \(error)")
                }
            }
            let negotiated = front.negotiated
            let backendFeatures = negotiated.backend
            report.detail(
                "queues \(negotiated.queues) of \(backendFeatures.maxQueues), ring pages \(negotiated.ringPages), "
                    + "segments/request \(negotiated.segmentsPerRequest), "
                    + "persistent \(negotiated.persistentGrants), flush \(backendFeatures.flush), "
                    + "discard \(backendFeatures.discard), max-ring-page-order \(backendFeatures.maxRingPageOrder)")
            do {
                try await exercise(front, backing: backing, bus: bus)
            } catch {
                await front.disconnect()
                throw error
            }
            try await within(60, "disconnect") { await front.disconnect() }
            let state = try await bus.state(of: backendPath)
            try require(state == .closed || state == nil, "backend state \(String(describing: state)) after disconnect")
            try await bus.remove(frontendPath)
            try await bus.remove(backendPath)
        }
    }

    /// Handshake results, I/O checked against the loop device's backing file, flush, discard, indirect.
    static func exercise(_ front: BlockFront, backing: String, bus: XenStoreBus) async throws {
        let info = await front.info()
        var file = stat()
        try require(stat(backing, &file) == 0, errnoText("stat \(backing)"))
        try require(info.readWrite && info.sectorSize == 512, "disk info \(info)")
        try require(
            info.sizeSectors * 512 == UInt64(file.st_size), "\(info.sizeSectors) sectors, file has \(file.st_size) B")
        try require(try await bus.state(of: backendPath) == .connected, "backend not Connected")
        try require(try await bus.state(of: frontendPath) == .connected, "frontend not Connected")
        let negotiated = front.negotiated
        if negotiated.backend.persistent {
            try require(negotiated.persistentGrants, "backend offers persistent grants, not in use")
        }
        if negotiated.backend.maxRingPageOrder > 0 {
            try require(negotiated.ringPages > 1, "backend offers a multi-page ring, \(negotiated.ringPages) used")
        }
        try require(
            negotiated.backend.maxIndirectSegments > Blkif.maxDirectSegments && negotiated.segmentsPerRequest > 11,
            "no indirect descriptors (backend offers \(negotiated.backend.maxIndirectSegments) segments)")

        // One sector, a full direct request, and 1 MiB: 256 segments, one indirect request.
        for (index, (sector, bytes)) in [(8, 512), (64, 11 * 4096), (2048, 1024 * 1024)].enumerated() {
            let pattern = PageBuffer(pages: (bytes + 4095) / 4096).slice(from: 0, count: bytes)
            for offset in stride(from: 0, to: bytes, by: 8) {
                pattern.setUInt64(UInt64(index + 1) << 56 | UInt64(sector) << 32 | UInt64(offset), at: offset)
            }
            try await within(30, "write \(bytes) B") { try await front.write(at: UInt64(sector), from: [pattern]) }
            try await within(30, "flush") { try await front.flush() }
            let readBack = PageBuffer(pages: (bytes + 4095) / 4096).slice(from: 0, count: bytes)
            try await within(30, "read \(bytes) B") { try await front.read(at: UInt64(sector), into: [readBack]) }
            try require(
                checksum(readBack) == checksum(pattern), "read of \(bytes) B at \(sector): checksum differs")
            let inFile = try await fileBytes(backing, sector: sector, count: bytes)
            try require(checksum(inFile) == checksum(pattern), "\(bytes) B at \(sector) not in \(backing)")
        }
        if negotiated.backend.discard {
            try await within(30, "discard") { try await front.discard(at: 2048, count: 8) }
            let cleared = PageBuffer(pages: 1)
            try await within(30, "read after discard") { try await front.read(at: 2048, into: [cleared]) }
            try require(cleared.bytes.allSatisfy { $0 == 0 }, "discarded sectors still hold data")
        }
    }

    /// `count` bytes of the backing file at `sector` (read on a thread of its own).
    static func fileBytes(_ path: String, sector: Int, count: Int) async throws -> PageBuffer {
        let buffer = PageBuffer(pages: (count + 4095) / 4096).slice(from: 0, count: count)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try require(fd >= 0, errnoText("open \(path)"))
        defer { close(fd) }
        let read = try await BlockBackChecks.io("pread \(path)") {
            pread(fd, buffer.pointer, count, off_t(sector * 512))
        }
        try require(read == count, errnoText("pread \(path) gave \(read)"))
        return buffer
    }

    /// FNV-1a 64 of the buffer.
    static func checksum(_ buffer: PageBuffer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for index in 0..<buffer.count {
            hash = (hash ^ UInt64(buffer.pointer.load(fromByteOffset: index, as: UInt8.self))) &* 0x100_0000_01b3
        }
        return hash
    }
}
