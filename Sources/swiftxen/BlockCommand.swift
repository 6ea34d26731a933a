import ArgumentParser
import BlkifProtocol
import BlockBack
import BlockDevice
import BlockFront
import EventChannel
import Foundation
import GrantTable
import XenCore
import XenStoreClient

/// `swiftxen block ...`: the Xen block backend.
struct BlockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block",
        abstract: "Xen block devices: serve a file to a guest's blkfront.",
        subcommands: [BlockServe.self]
    )
}

/// `swiftxen block serve FILE --domain N`: creates the vbd's xenstore nodes (unless `--no-create`) and serves
/// FILE to domain N's frontend with every blkif feature, until the frontend closes.
struct BlockServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve FILE as a virtual block device to domain N (needs Xen: gntdev, evtchn, xenstore).",
        discussion: """
            The backend directory is /local/domain/<backend-domain>/backend/vbd/<N>/<id>. With --no-create the
            toolstack (xl) is expected to have written the nodes already.
            """
    )

    @Argument(help: "The disk image (a regular file or a block device).")
    var file: String

    @Option(help: "The guest domain whose frontend connects.")
    var domain: UInt16

    @Option(name: .customLong("device"), help: "The vbd: a xenstore id (51712) or a Linux name (xvda).")
    var device = "xvda"

    @Option(help: "This (the backend's) domain id.")
    var backendDomain: UInt16 = 0

    @Option(help: "Logical sector size of the disk (512 or 4096).")
    var sectorSize = 512

    @Flag(help: "Serve the disk read-only.")
    var readOnly = false

    @Flag(help: "Do not create the xenstore nodes (the toolstack did).")
    var noCreate = false

    @Flag(help: "Do not advertise feature-flush-cache.")
    var noFlush = false

    @Flag(help: "Do not advertise feature-barrier.")
    var noBarrier = false

    @Flag(help: "Do not advertise feature-discard.")
    var noDiscard = false

    @Flag(help: "Do not advertise feature-persistent.")
    var noPersistentGrants = false

    @Option(help: "feature-max-indirect-segments (0 disables indirect requests).")
    var maxIndirectSegments = 256

    @Option(help: "max-ring-page-order.")
    var maxRingPageOrder = 4

    @Option(help: "multi-queue-max-queues.")
    var maxQueues = 4

    @Option(help: "A xenstored unix socket (default: as libxenstore, XENSTORED_PATH or the xenbus device).")
    var xenstoreSocket: String?

    func run() async throws {
        guard let id = VirtualDeviceNumber.parse(device) else {
            throw ValidationError("unknown device \"\(device)\" (use a number like 51712 or a name like xvda)")
        }
        let disk = try FileBlockDevice(path: file, sectorSize: sectorSize, readOnly: readOnly)
        let client: XenStoreClient
        if let xenstoreSocket {
            client = try await XenStoreClient.connect(socketPath: xenstoreSocket)
        } else {
            client = try await XenStoreClient.make()
        }
        let store = XenStoreBus(client: client)
        let grants = try XenGrantTable()
        let events = try XenEventChannel()
        let nodes = VirtualBlockDeviceNodes(
            backendDomain: DomainID(backendDomain), frontendDomain: DomainID(domain), deviceID: id,
            writable: !readOnly)
        if !noCreate { try await nodes.create(in: store) }
        var options = BlockBackOptions(domain: DomainID(backendDomain))
        options.flush = !noFlush
        options.barrier = !noBarrier
        options.discard = !noDiscard
        options.persistentGrants = !noPersistentGrants
        options.maxIndirectSegments = maxIndirectSegments
        options.maxRingPageOrder = maxRingPageOrder
        options.maxQueues = maxQueues
        let info = await disk.info()
        print("swiftxen block: serving \(file) (\(info)) at \(nodes.backendPath) to domain \(domain)")
        try await BlockBack.serve(
            disk, backendPath: nodes.backendPath, store: store, grants: grants, events: events, options: options)
        print("swiftxen block: frontend closed")
        if !noCreate { try await nodes.destroy(in: store) }
    }
}
