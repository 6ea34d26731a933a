import BlockFront  // XenStoreBus
import ConsoleBackend
import Foundation
import NetworkDevice
import Quickstarts
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenStoreServer

// README.md's quickstarts, run end to end on the simulator, in the README's order.

@Test func xenStoreQuickstartReadsTheNameAndWaitsForTheState() async throws {
    let server = XenStoreServer()
    let guest5 = XenStoreClient(transport: server.connect(domain: 5))
    let writer = Task {  // domain 5 reports its state once its directory exists
        try await guest5.wait { h in
            guard (try? await h.read("/local/domain/5/name")) != nil else { throw XenStoreError.again }
        }
        try await guest5.immediate { h in try await h.write("/local/domain/5/state", "4") }
    }
    let (client, name, state) = try await xenStoreQuickstart(server: server)
    try await writer.value
    #expect(name == "guest5")
    #expect(state == "4")
    let owner = try await client.immediate { h in try await h.permissions(of: "/local/domain/5/name") }.owner
    #expect(owner == 5)  // inherited from the directory
    await client.close()
    await guest5.close()
}

@Test func grantsQuickstartMapsTheSharedValueAndReleasesEverything() async throws {
    let hypervisor = SimulatedHypervisor()
    let (guest, value) = try await grantsQuickstart(hypervisor: hypervisor)
    #expect(value == 0xC0FFEE)
    #expect(hypervisor.grants(of: guest.id).isEmpty)
    #expect(hypervisor.memoryRecords(of: hypervisor.dom0.id).allSatisfy { $0.released })
}

@Test func blockQuickstartReadsBackWhatItWrote() async throws {
    let hypervisor = SimulatedHypervisor()
    let guest = try hypervisor.createDomain(name: "guest")
    let readBack = try await blockQuickstart(server: XenStoreServer(), hypervisor: hypervisor, guest: guest)
    #expect(readBack.bytes == [UInt8](repeating: 0x42, count: 4096))
    #expect(hypervisor.grants(of: guest.id).isEmpty)  // the frontend revoked every grant
}

@Test func networkQuickstartDeliversTheFrameToDom0() async throws {
    let hypervisor = SimulatedHypervisor(grantTableSize: 8192)
    let server = XenStoreServer()
    let guest = try hypervisor.createDomain(name: "guest")
    let backStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: .dom0)))
    let frontStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: guest.id)))
    let frame = try #require(
        try await networkQuickstart(hypervisor: hypervisor, guest: guest, backStore: backStore, frontStore: frontStore))
    #expect(frame.data.count == 60)
    let bytes = frame.data.bytes
    #expect(Array(bytes[6..<12]) == [0x00, 0x16, 0x3E, 0x00, 0x01, 0x00])  // from the guest's MAC
}

@Test func consoleQuickstartPutsTheGuestsTextOnThePty() async throws {
    let hypervisor = SimulatedHypervisor()
    let server = XenStoreServer()
    let guest = try hypervisor.createDomain(name: "guest")
    let client = XenStoreClient(transport: server.connect(domain: .dom0))
    let (daemon, running, console) = try await consoleQuickstart(
        server: server, client: client, hypervisor: hypervisor, guest: guest)
    var events = daemon.events.makeAsyncIterator()
    guard case .attached(let session) = await events.next() else {
        Issue.record("the daemon did not attach the console")
        running.cancel()
        return
    }
    #expect(session.id.domain == guest.id)
    let tty = try await client.wait { h in
        let path = try await h.read("/local/domain/\(guest.id.rawValue)/console/tty")
        guard !path.isEmpty else { throw XenStoreError.again }
        return path
    }
    #expect(tty.hasPrefix("/dev/pts/"))
    let text = try readPty(tty, until: "hello from the guest\r\n")
    #expect(text.hasSuffix("hello from the guest\r\n"))
    await console.close()
    running.cancel()
    _ = await running.result
    await client.close()
}

/// Reads the pty slave at `path` until `expected` arrived (or 10 s of nothing new).
private func readPty(_ path: String, until expected: String) throws -> String {
    let fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK)
    guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    defer { close(fd) }
    var received: [UInt8] = []
    var idle = 0
    while !String(decoding: received, as: UTF8.self).hasSuffix(expected) && idle < 1000 {
        var chunk = [UInt8](repeating: 0, count: 256)
        let count = read(fd, &chunk, chunk.count)
        if count > 0 {
            received += chunk.prefix(count)
            idle = 0
        } else {
            idle += 1
            usleep(10_000)
        }
    }
    return String(decoding: received, as: UTF8.self)
}

@Test func nbdQuickstartReadsBackWhatItWrote() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("quickstart-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let readBack = try await nbdQuickstart(socket: directory.appendingPathComponent("nbd.sock").path)
    #expect(readBack.bytes == [UInt8](repeating: 0x5A, count: 4096))
}

@Test func userdataQuickstartStoresRetrievesAndSweeps() async throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("quickstart-\(UUID())")
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: root) }
    let hypervisor = SimulatedHypervisor()
    let guest = try hypervisor.createDomain(name: "guest")
    let (value, removed) = try await userdataQuickstart(root: root.path, hypervisor: hypervisor, guest: guest)
    #expect(value == Array("owner=alice".utf8))
    #expect(removed.map(\.domid) == [guest.id])
    #expect(removed.first?.removed.isEmpty == false)
    let left = try FileManager.default.contentsOfDirectory(atPath: root.path)
    #expect(!left.contains { $0.hasSuffix("my-toolstack") })  // the guest's file is gone
}

@Test func vchanQuickstartCarriesTheBytes() async throws {
    let hypervisor = SimulatedHypervisor()
    let guest = try hypervisor.createDomain(name: "guest")
    let hello = try await vchanQuickstart(server: XenStoreServer(), hypervisor: hypervisor, guest: guest)
    #expect(hello == Array("hello".utf8))
}
