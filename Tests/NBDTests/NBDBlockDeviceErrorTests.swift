import BlockDevice
import NBDClient
import NBDProtocol
import NBDServer
import Testing
import XenCore

/// A disk whose reads fail as a broken medium does.
final class FailingReadDevice: BlockDevice {
    let base = MemoryBlockDevice(sizeSectors: 64)
    func info() async -> BlockDeviceInfo { await base.info() }
    func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        throw .io(context: "medium error at sector \(sector)")
    }
    func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        try await base.write(at: sector, from: buffers)
    }
    func disconnect() async { await base.disconnect() }
}

/// The `BlockDevice` view of an NBD client keeps the `NBDError` under the `BlockError` it throws.
@Suite struct NBDBlockDeviceErrorTests {
    @Test func aServerErrorSurfacesAsTheNBDError() async throws {
        let rig = try await ServerRig([NBDServerExport(device: FailingReadDevice())])
        let client = try await NBDClient.connect(uri: rig.uri())
        let device = NBDBlockDevice(client)
        #expect(device.deviceInfo == BlockDeviceInfo(readWrite: true, sectorSize: 512, sizeSectors: 64))
        let error = await #expect(throws: BlockError.self) {
            try await device.read(at: 3, into: [PageBuffer(pages: 1)])
        }
        guard case .io(let context, let underlying) = error else {
            Issue.record("expected .io, got \(String(describing: error))")
            await device.disconnect()
            await rig.stop()
            return
        }
        guard case .serverError(let command, let offset, let errno, _) = underlying as? NBDError else {
            Issue.record("expected an NBDError.serverError under \(context), got \(String(describing: underlying))")
            await device.disconnect()
            await rig.stop()
            return
        }
        #expect(command == .read)
        #expect(offset == 3 * 512)
        #expect(errno == .eio)
        #expect(context == (underlying as? NBDError)?.description)
        // Writes still work: the error ended one request, not the connection.
        try await device.write(at: 0, from: [PageBuffer(pages: 1)])
        await device.disconnect()
        await rig.stop()
    }

    /// The device says it discards when the server advertised `NBD_FLAG_SEND_TRIM` (a writable export), and
    /// not for a read-only one.
    @Test(arguments: [false, true]) func discardSupportFollowsTheServersTrimFlag(_ readOnly: Bool) async throws {
        let rig = try await ServerRig([NBDServerExport(device: MemoryBlockDevice(sizeSectors: 64), readOnly: readOnly)])
        let client = try await NBDClient.connect(uri: rig.uri())
        let device: any BlockDevice = NBDBlockDevice(client)
        #expect(client.flags.contains(.sendTrim) == !readOnly)
        #expect(await device.supportsDiscard == !readOnly)
        await device.disconnect()
        await rig.stop()
    }
}
