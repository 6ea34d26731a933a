import BlockDevice
import NBDClient
import NBDServer
import XenCore

/// Serves a RAM disk over NBD on the unix socket `socket`, writes a block through a client and reads it back.
public func nbdQuickstart(socket: String) async throws -> PageBuffer {
    let disk = MemoryBlockDevice(sizeSectors: 2048)  // 1 MiB
    let nbd = try await NBDServer(exports: [NBDServerExport(name: "disk", device: disk)])
    let listener = try nbd.listen(on: .unix(path: socket))
    let remote = try await NBDClient.connect(uri: "nbd+unix:///disk?socket=\(socket)")
    try await remote.write(at: 0, from: [PageBuffer(copying: [UInt8](repeating: 0x5A, count: 4096))])
    let readBack = PageBuffer(pages: 1)
    try await remote.read(at: 0, into: [readBack])
    await remote.disconnect()
    listener.stop()
    await nbd.shutdown()
    return readBack
}
