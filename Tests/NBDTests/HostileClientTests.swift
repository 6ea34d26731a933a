import BlockDevice
import Foundation
import NBDProtocol
import NBDServer
import Testing
import XenCore

/// NBDServer against a client that breaks the rules: every bad request gets the spec's error or a closed
/// connection, never a crash, and the memory it can make the server hold stays bounded.
@Suite("NBDServer against a hostile client", .serialized)
struct HostileClientTests {
    private func rig(_ options: NBDServerOptions = NBDServerOptions()) async throws -> ServerRig {
        try await ServerRig(
            [ServerRig.memory(64 << 20), ServerRig.memory(1 << 20, name: "ro", readOnly: true)], options: options)
    }

    @Test func badRequestsGetErrorsAndTheConnectionLivesOn() async throws {
        let rig = try await rig()
        let client = try RawClient(socket: rig.socketPath)
        #expect(client.handshake())
        client.request(.read, cookie: 1, offset: 64 << 20, length: 4096)  // beyond the end
        client.request(.read, cookie: 2, offset: 100, length: 512)  // unaligned
        client.request(.read, cookie: 3, offset: 0, length: 4096, type: 99)  // unknown command
        client.request(.read, flags: .reqOne, cookie: 4, offset: 0, length: 512)  // a flag READ does not take
        client.request(
            .write, cookie: 5, offset: (64 << 20) - 512, length: 1024, payload: [UInt8](repeating: 1, count: 1024))
        client.request(.read, cookie: 6, offset: 0, length: 33 << 20)  // over the maximum payload
        client.request(.read, cookie: 7, offset: 0, length: 4096)
        let events = try #require(client.replies(7))
        for (cookie, errno) in [
            (1, "EINVAL"), (2, "EINVAL"), (3, "EINVAL"), (4, "EINVAL"), (5, "ENOSPC"), (6, "EOVERFLOW"),
        ] {
            #expect(events.contains("error \(cookie) \(errno)"), "request \(cookie): \(events)")
        }
        #expect(events.contains("data 7 0 4096"))
        await rig.stop()
    }

    @Test func readOnlyRefusalsSkipThePayload() async throws {
        let rig = try await rig()
        let client = try RawClient(socket: rig.socketPath)
        #expect(client.handshake(export: "ro", structured: false))
        client.request(.write, cookie: 1, offset: 0, length: 8192, payload: [UInt8](repeating: 7, count: 8192))
        client.request(.trim, cookie: 2, offset: 0, length: 4096)
        client.request(.read, cookie: 3, offset: 0, length: 512)
        // Simple replies: an errno each, then the read's data.
        #expect(client.replies(3) == ["error 1 EPERM", "done 1", "error 2 EPERM", "done 2", "data 3 0 512", "done 3"])
        await rig.stop()
    }

    @Test func protocolViolationsCloseTheConnection() async throws {
        let rig = try await rig()
        // A request with a bad magic.
        let badMagic = try RawClient(socket: rig.socketPath)
        #expect(badMagic.handshake())
        badMagic.send([0xde, 0xad, 0xbe, 0xef] + [UInt8](repeating: 0, count: 24))
        #expect(badMagic.isClosed())
        // A WRITE whose payload is larger than the server accepts.
        let huge = try RawClient(socket: rig.socketPath)
        #expect(huge.handshake())
        huge.request(.write, cookie: 1, offset: 0, length: 1 << 30)
        #expect(huge.isClosed())
        // A client that vanishes in the middle of a WRITE payload.
        let vanishing = try RawClient(socket: rig.socketPath)
        #expect(vanishing.handshake())
        vanishing.request(.write, cookie: 1, offset: 0, length: 65536, payload: [UInt8](repeating: 1, count: 1000))
        _ = shutdown(vanishing.fd, Int32(SHUT_RDWR))
        // Handshake: a bad option magic.
        let garbage = try RawClient(socket: rig.socketPath)
        _ = garbage.receive(18)
        garbage.send([0, 0, 0, 3] + Array("IHAVEOPX".utf8) + [0, 0, 0, 7, 0, 0, 0, 0])
        #expect(garbage.isClosed())
        #expect(await rig.waitIdle())
        await rig.stop()
    }

    @Test func slowHandshakesTimeOutAndOversizeOptionsAreRefused() async throws {
        var options = NBDServerOptions()
        options.handshakeTimeout = .milliseconds(300)
        let rig = try await rig(options)
        let silent = try RawClient(socket: rig.socketPath)
        #expect(silent.receive(18) != nil)
        #expect(silent.isClosed())
        let big = try RawClient(socket: rig.socketPath)
        _ = big.receive(18)
        big.send([0, 0, 0, 3] + NBDOptionRequestHeader(option: 7, length: 1 << 20).encode())
        big.send([UInt8](repeating: 0, count: 1 << 20))
        #expect(big.optionReply()?.type == .error(.tooBig))
        big.send(NBDOptionRequest.encode(.abort))
        #expect(big.optionReply()?.type == .ack)
        #expect(big.isClosed())
        await rig.stop()
    }

    @Test func aFloodOfReadsIsBoundedByBackPressure() async throws {
        var options = NBDServerOptions()
        options.maxInFlightBytes = 4 << 20
        options.sparseReadMinimum = 64 << 20  // every reply carries its megabyte of data
        let rig = try await rig(options)
        let client = try RawClient(socket: rig.socketPath)
        #expect(client.handshake())
        // 64 MiB of reads asked for, none of the replies read yet.
        for cookie in 0..<64 { client.request(.read, cookie: UInt64(cookie), offset: 0, length: 1 << 20) }
        try await Task.sleep(for: .milliseconds(300))
        let held = rig.server.inFlight
        // What the server holds: at most the limit plus one request's buffer (plus what sits in the socket).
        #expect(held.bytes <= (4 << 20) + (1 << 20), "held \(held)")
        #expect(held.requests < 64)
        // Reading the replies lets the rest through.
        let events = try #require(client.replies(64))
        #expect(events.filter { $0.hasPrefix("data") }.count == 64, "\(events.prefix(8))")
        await rig.stop()
    }

    @Test func sparseReadsDontFragmentAndExtendedHeaders() async throws {
        let rig = try await rig()
        let writer = try RawClient(socket: rig.socketPath)
        #expect(writer.handshake(extended: true))
        // Data in the second 64 KiB chunk only.
        writer.request(
            .write, flags: .payloadLength, cookie: 1, offset: 65536, length: 65536,
            payload: [UInt8](repeating: 3, count: 65536))
        // A 2 MiB read comes back as hole, data, hole chunks; with DF as one data chunk.
        writer.request(.read, cookie: 2, offset: 0, length: 2 << 20)
        writer.request(.read, flags: .dontFragment, cookie: 3, offset: 0, length: 2 << 20)
        writer.request(.blockStatus, cookie: 4, offset: 0, length: 4 << 20)
        // A payload on a command that takes none: skipped, refused, and the stream stays in step.
        writer.request(
            .flush, flags: .payloadLength, cookie: 5, offset: 0, length: 16, payload: [UInt8](repeating: 9, count: 16))
        writer.request(.flush, cookie: 6, offset: 0, length: 0)
        let events = try #require(writer.replies(6))
        #expect(
            events.filter { $0.hasSuffix(" 2") || $0.contains(" 2 ") } == [
                "hole 2 0 65536", "data 2 65536 65536", "hole 2 131072 1966080", "done 2",
            ])
        #expect(events.filter { $0.contains(" 3") } == ["data 3 0 2097152", "done 3"])
        #expect(events.contains("status 4 65536:3,65536:0,4063232:3"), "\(events)")
        #expect(events.contains("error 5 EINVAL") && events.contains("done 6"))
        await rig.stop()
    }
}
