import EventChannel
import Foundation
import GrantTable
import Testing
import XenCore

private let xenPresent =
    FileManager.default.fileExists(atPath: "/dev/xen/gntdev")
    && FileManager.default.fileExists(atPath: "/dev/xen/gntalloc")
    && FileManager.default.fileExists(atPath: "/dev/xen/evtchn")

/// Runs `body` with fd 2 redirected to a pipe and returns what was written to stderr.
private func capturingStderr(_ body: () -> Void) -> String {
    fflush(nil)
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return "<pipe failed>" }
    let saved = dup(2)
    dup2(fds[1], 2)
    body()
    fflush(nil)
    dup2(saved, 2)
    close(saved)
    close(fds[1])
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fds[0], &chunk, chunk.count)
        if n <= 0 { break }
        output += chunk[0..<n]
    }
    close(fds[0])
    return String(decoding: output, as: UTF8.self)
}

/// The real backends: on this machine (no /dev/xen) opening must fail with the typed error and stay quiet;
/// in a dom0 (the real-Xen harness) the loopback tests run, as the C self-test does.
@Suite struct RealBackendTests {
    /// libxen's default logger prints e.g. "xengnttab: error: Could not open grant table interface: ...".
    /// Other suites share the process (and fd 2), so only libxen's own messages count as noise.
    static func isLibxenNoise(_ text: String) -> Bool {
        text.contains("Could not open") || text.contains("xengnttab") || text.contains("xengntshr")
            || text.contains("xenevtchn") || text.contains("/dev/xen")
    }

    @Test(.enabled(if: !FileManager.default.fileExists(atPath: "/dev/xen/gntdev")))
    func openingGnttabWithoutXenFailsWithTypedErrorAndNoStderr() async {
        var caught: GrantTableError?
        let noise = capturingStderr {
            do { _ = try XenGrantTable() } catch { caught = error as? GrantTableError }
        }
        #expect(caught == .interfaceUnavailable(device: "/dev/xen/gntdev", errno: ENOENT))
        #expect(!Self.isLibxenNoise(noise))
        #expect(throws: GrantTableError.self) { try XenGrantTable.withGrantTable { _ in } }
        await #expect(throws: GrantTableError.self) {
            try await XenGrantTable.withGrantTable { _ async throws in Issue.record("body ran without Xen") }
        }
    }

    @Test(.enabled(if: !FileManager.default.fileExists(atPath: "/dev/xen/gntalloc")))
    func openingGntshrWithoutXenFailsWithTypedErrorAndNoStderr() async {
        var caught: GrantTableError?
        let noise = capturingStderr {
            do { _ = try XenGntshr() } catch { caught = error as? GrantTableError }
        }
        #expect(caught == .interfaceUnavailable(device: "/dev/xen/gntalloc", errno: ENOENT))
        #expect(!Self.isLibxenNoise(noise))
        #expect(throws: GrantTableError.self) { try XenGntshr.withGntshr { _ in } }
        // The async form opens the same way; its body never runs.
        await #expect(throws: GrantTableError.self) {
            try await XenGntshr.withGntshr { _ async throws in Issue.record("body ran without Xen") }
        }
    }

    @Test(.enabled(if: !FileManager.default.fileExists(atPath: "/dev/xen/evtchn")))
    func openingEvtchnWithoutXenFailsWithTypedErrorAndNoStderr() {
        var caught: EventChannelError?
        let noise = capturingStderr {
            do { _ = try XenEventChannel() } catch { caught = error as? EventChannelError }
        }
        #expect(caught == .interfaceUnavailable(device: "/dev/xen/evtchn", errno: ENOENT))
        #expect(!Self.isLibxenNoise(noise))
    }

    @Test(.enabled(if: xenPresent))
    func gntshrPageMapsBackThroughGnttabInDom0() throws {
        let gntshr = try XenGntshr()
        let gnttab = try XenGrantTable()
        let shared = try gntshr.sharePages(with: .dom0, count: 2, writable: true)
        let mapping = try gnttab.mapv(domain: .dom0, refs: shared.refs, writable: true)
        shared.buffer.setUInt8(0xA5, at: 0)
        shared.buffer.setUInt8(0x5A, at: 2 * xenPageSize - 1)
        #expect(mapping.buffer.uint8(at: 0) == 0xA5)
        #expect(mapping.buffer.uint8(at: 2 * xenPageSize - 1) == 0x5A)
        mapping.buffer.setUInt8(0x42, at: 1)
        #expect(shared.buffer.uint8(at: 1) == 0x42)
        try mapping.unmap()
        let readOnly = try gnttab.map(domain: .dom0, ref: shared.refs[0], writable: false)
        #expect(readOnly.buffer.uint8(at: 1) == 0x42)
        try readOnly.unmap()
        try shared.unshare()
        #expect(throws: GrantTableError.unsupported(operation: "grant_access")) {
            try gnttab.grantAccess(8, to: .dom0, writable: true, page: PageBuffer(pages: 1))
        }
        gntshr.close()
    }

    @Test(.enabled(if: xenPresent))
    func evtchnLoopbackNotifiesBothWaysInDom0() async throws {
        let a = try XenEventChannel()
        let b = try XenEventChannel()
        defer {
            a.close()
            b.close()
        }
        let portA = try a.bindUnboundPort(remote: .dom0)
        let portB = try b.bindInterdomain(remote: .dom0, remotePort: portA)
        var eventsA = a.notifications(portA).makeAsyncIterator()
        var eventsB = b.notifications(portB).makeAsyncIterator()
        try b.notify(portB)
        #expect(await eventsA.next() == portA)
        try a.notify(portA)
        #expect(await eventsB.next() == portB)
        try b.unbind(portB)
        #expect(await eventsB.next() == nil)
        try a.unbind(portA)
    }
}
