import BlkifProtocol
import NBDProtocol
import XenCore
import XenStoreProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// The seed corpora (`swiftxen-fuzz make-seeds DIR`): for each target, inputs in its format carrying the
/// messages the golden-byte tests check, built with the project's own encoders (which those tests pin to the
/// C headers and the specs). Fuzz/corpus holds their output, committed.
enum Seeds {
    static func write(to directory: String) {
        let all: [(String, [[UInt8]])] = [
            ("xenstore-packet", xenstorePackets()), ("xenstore-server", xenstoreServer()),
            ("xenstore-ring", xenstoreRing()), ("nbd-reply", nbdReplies()), ("nbd-handshake", nbdHandshakes()),
            ("nbd-uri", nbdURIs()), ("blkif-back", blkifBack()), ("blkif-front", blkifFront()),
            ("console-ring", consoleRing()), ("userdata", userdata()), ("netif-back", netifBack()),
            ("netif-front", netifFront()), ("vchan-ring", vchanRing()), ("nbd-server-request", nbdServerRequests()),
        ]
        for (target, seeds) in all {
            let folder = directory + "/" + target
            mkdir(directory, 0o755)
            mkdir(folder, 0o755)
            for (index, seed) in seeds.enumerated() {
                let path = folder + "/seed-\(index)"
                guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
                _ = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
                fclose(file)
            }
        }
    }

    // MARK: - xenstore

    static let requests: [XenStoreRequest] = [
        .read(path: "/local/domain/5/name"), .write(path: "data/key", value: Array("value".utf8)),
        .mkdir(path: "device/vbd/51712"), .rm(path: "data"), .directory(path: "/local/domain/5"),
        .directoryPart(path: "/local/domain", offset: 0), .getPermissions(path: "data/key"),
        .setPermissions(path: "data/key", permissions: XenStorePermissions(owner: 5, acl: [.init(.read, 6)])),
        .watch(path: "device", token: "tok"), .unwatch(path: "device", token: "tok"), .transactionStart,
        .transactionEnd(commit: true), .transactionEnd(commit: false), .introduce(domain: 5, gfn: 4096, port: 3),
        .release(domain: 5), .resume(domain: 5), .getDomainPath(domain: 5), .isDomainIntroduced(domain: 5),
        .setTarget(domain: 7, target: 5), .resetWatches, .control(arguments: ["check"]),
    ]

    static let replies: [XenStoreReply] = [
        .read(Array("value".utf8)), .directory(["a", "b"]),
        .directoryPart(generation: "7", children: ["a"], complete: true),
        .permissions(XenStorePermissions(owner: 5, others: .read)), .transactionStarted(3),
        .domainPath("/local/domain/5"), .isDomainIntroduced(true), .ok(.write), .error(.enoent),
        .watchEvent(path: "device/vbd", token: "tok"), .control(Array("OK\0".utf8)),
    ]

    static func xenstorePackets() -> [[UInt8]] {
        let requestBytes = requests.enumerated().flatMap {
            $0.element.packet(requestID: UInt32($0.offset), transactionID: 2).bytes
        }
        let replyBytes = replies.enumerated().flatMap {
            $0.element.packet(requestID: UInt32($0.offset), transactionID: 0).bytes
        }
        return [[0] + requestBytes, [0] + replyBytes, [7] + requestBytes.prefix(200), [1] + replyBytes.prefix(120)]
    }

    /// One xenstore-server operation: selector, type, transaction, length, payload.
    static func op(_ request: XenStoreRequest, tid: UInt8 = 0, connection: UInt8 = 0) -> [UInt8] {
        let payload = request.payload.prefix(255)
        return [connection, UInt8(request.type.rawValue), tid, UInt8(payload.count)] + payload
    }

    static func xenstoreServer() -> [[UInt8]] {
        // Issue #20: three transactions of 23 new nodes each, all committed.
        var bypass: [UInt8] = []
        for _ in 0..<3 { bypass += op(.transactionStart) }
        for tid: UInt8 in 1...3 {
            for index in 0..<23 { bypass += op(.write(path: "t\(tid)n\(index)", value: []), tid: tid) }
        }
        for tid: UInt8 in 1...3 { bypass += op(.transactionEnd(commit: true), tid: tid) }
        // Issue #20: 20 children with 20-byte names under the home.
        var children: [UInt8] = []
        for index in 0..<20 { children += op(.write(path: "child-name-number-\(index + 10)", value: [])) }
        var mix: [UInt8] = []
        for request in requests where request != .resetWatches { mix += op(request) }
        mix += op(.write(path: "/local/domain/0/backend/vbd/5/51712/state", value: Array("4".utf8)))
        mix += op(.read(path: "/local/domain/6"), connection: 2)
        mix += op(.write(path: "data", value: Array("x".utf8)), connection: 2)
        return [bypass, children, mix]
    }

    static func xenstoreRing() -> [[UInt8]] {
        let request = XenStoreRequest.read(path: "/local/domain/5/name").packet(requestID: 1).bytes
        let reply = XenStoreReply.read(Array("guest".utf8)).packet(requestID: 1, transactionID: 0).bytes
        let big = XenStoreRequest.write(path: "big", value: Array(repeating: 0x41, count: 400)).packet(requestID: 2)
            .bytes
        return [
            [1, 0, 0, 0, 0, 0, UInt8(request.count)] + request + [3, 7, 3, 7],
            [0, 0, 0, 0, 0, 0, UInt8(reply.count)] + reply + [3, 7],
            [2, 0, 0, 0, 0, 6, 1, 0, 0, 0, 4, 0, 7],
            [1, 9, 9, 9, 9, 0, 255] + big.prefix(255) + [3, 0, UInt8(big.count - 255)] + big.dropFirst(255) + [3, 3],
        ]
    }

    // MARK: - NBD

    static func be(_ value: UInt64, _ width: Int) -> [UInt8] {
        (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64(width - 1 - $0))) }
    }

    static func nbdReplies() -> [[UInt8]] {
        // Requests: 1 read 0+512, 2 write, 3 block status 0+4096 (flags byte: chunk size in bits 2-7).
        let table: [UInt8] = [3, 0, 0, 0, 0, 2, 1, 0, 0, 0, 2, 4, 0, 0, 0, 16]
        let simple =
            be(UInt64(NBDMagic.simpleReply), 4) + be(0, 4) + be(1, 8) + [UInt8](repeating: 0x5A, count: 512)
            + be(UInt64(NBDMagic.simpleReply), 4) + be(0, 4) + be(2, 8)
        func chunk(_ flags: UInt16, _ type: UInt16, _ cookie: UInt64, _ payload: [UInt8]) -> [UInt8] {
            be(UInt64(NBDMagic.structuredReply), 4) + be(UInt64(flags), 2) + be(UInt64(type), 2) + be(cookie, 8)
                + be(UInt64(payload.count), 4) + payload
        }
        let structured =
            chunk(0, NBDChunkType.offsetData, 1, be(0, 8) + [UInt8](repeating: 1, count: 256))
            + chunk(0, NBDChunkType.offsetHole, 1, be(256, 8) + be(256, 4)) + chunk(1, NBDChunkType.none, 1, [])
            + chunk(1, NBDChunkType.error, 2, be(5, 4) + be(2, 2) + Array("no".utf8))
            + chunk(1, NBDChunkType.blockStatus, 3, be(1, 4) + be(4096, 4) + be(0, 4))
        func extendedChunk(_ flags: UInt16, _ type: UInt16, _ cookie: UInt64, _ payload: [UInt8]) -> [UInt8] {
            be(UInt64(NBDMagic.extendedReply), 4) + be(UInt64(flags), 2) + be(UInt64(type), 2) + be(cookie, 8)
                + be(0, 8) + be(UInt64(payload.count), 8) + payload
        }
        let extended =
            extendedChunk(1, NBDChunkType.offsetData, 1, be(0, 8) + [UInt8](repeating: 2, count: 512))
            + extendedChunk(1, NBDChunkType.blockStatusExtended, 3, be(1, 4) + be(1, 4) + be(4096, 8) + be(3, 8))
            + extendedChunk(1, NBDChunkType.errorOffset, 2, be(5, 4) + be(0, 2) + be(0, 8))
        return [
            [0 << 2 | 0] + table + [0] + simple, [16 << 2 | 1] + table + [0x55] + structured,
            [0 << 2 | 3] + table + [0] + extended, [1 << 2 | 1] + table + [0xFF] + structured,
        ]
    }

    static func nbdHandshakes() -> [[UInt8]] {
        let greeting = be(NBDMagic.initial, 8) + be(NBDMagic.option, 8) + [0, 3]
        func reply(_ option: UInt32, _ type: UInt32, _ data: [UInt8]) -> [UInt8] {
            be(NBDMagic.optionReply, 8) + be(UInt64(option), 4) + be(UInt64(type), 4) + be(UInt64(data.count), 4) + data
        }
        let go =
            reply(7, 3, be(0, 2) + be(1 << 30, 8) + be(0x4D, 2))
            + reply(7, 3, be(3, 2) + be(512, 4) + be(4096, 4) + be(1 << 25, 4))
            + reply(7, 3, be(2, 2) + Array("disk".utf8)) + reply(7, 1, [])
        let list = reply(3, 2, be(4, 4) + Array("disk".utf8) + Array("a disk".utf8)) + reply(3, 1, [])
        let meta = reply(10, 4, be(1, 4) + Array("base:allocation".utf8)) + reply(10, 1, []) + reply(7, 0x8000_0001, [])
        let oldstyle =
            be(NBDMagic.initial, 8) + be(NBDMagic.oldstyle, 8) + be(1 << 20, 8) + be(1, 4)
            + [UInt8](repeating: 0, count: 124)
        return [greeting + go, greeting + list, greeting + meta, oldstyle]
    }

    static func nbdURIs() -> [[UInt8]] {
        [
            "nbd://localhost/disk", "nbd://127.0.0.1:10810/", "nbds://server.example/export?tls-verify-peer=false",
            "nbd+unix:///disk?socket=/tmp/nbd.sock", "nbds+unix://localhost/?socket=/run/s&tls-certificates=/etc/pki",
            "nbd://[::1]:10809/a%20b", "nbd://user@host:1/x?tls-hostname=h&tls-ca-file=/ca.pem",
        ].map { Array($0.utf8) }
    }

    // MARK: - blkif

    static func slotBytes(_ request: BlkifRequest) -> [UInt8] {
        let page = PageBuffer(pages: 1)
        request.encode(into: page)
        return Array(page.bytes.prefix(Blkif.requestSize))
    }

    static func blkifBack() -> [[UInt8]] {
        let requests: [BlkifRequest] = [
            .direct(
                BlkifDirectRequest(
                    operation: .read, handle: 0, id: 1, sector: 0, segments: [BlkifSegment(grant: GrantRef(8))])),
            .direct(
                BlkifDirectRequest(
                    operation: .write, handle: 0, id: 2, sector: 8,
                    segments: (0..<11).map {
                        BlkifSegment(grant: GrantRef(UInt32(10 + $0)), firstSector: 1, lastSector: 6)
                    })),
            .direct(BlkifDirectRequest(operation: .flushDiskCache, handle: 0, id: 3, sector: 0, segments: [])),
            .discard(BlkifDiscardRequest(handle: 0, id: 4, sector: 64, sectorCount: 128)),
            .indirect(
                BlkifIndirectRequest(
                    operation: .read, segmentCount: 600, handle: 0, id: 5, sector: 0,
                    indirectGrants: [GrantRef(30), GrantRef(31)])),
        ]
        var seed: [UInt8] = [0, 0, 0, 0, 0]
        for (index, request) in requests.enumerated() { seed += [0, UInt8(index)] + slotBytes(request) }
        seed += [2, UInt8(requests.count), 4, 6, 255]
        let indirectPage = PageBuffer(pages: 1)
        for index in 0..<512 {
            BlkifSegment(grant: GrantRef(UInt32(100 + index))).encode(into: indirectPage, at: index * 8)
        }
        seed += [7] + indirectPage.bytes
        let overflow: [UInt8] = [1, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0, 0, 4]
        return [seed, overflow, [1, 0, 0, 0, 0] + [0, 0] + slotBytes(requests[0]) + [2, 1, 5, 6, 1]]
    }

    static func blkifFront() -> [[UInt8]] {
        let page = PageBuffer(pages: 1)
        var seed: [UInt8] = [0, 0, 3]
        for id in 1...3 {
            BlkifResponse(id: UInt64(id), operation: 0, status: .okay).encode(into: page)
            seed += [1, UInt8(id - 1)] + page.bytes.prefix(Blkif.responseSize)
        }
        seed += [3, 3, 5]
        return [seed, [0, 0, 3, 2, 9, 0, 0, 0, 5], [1, 0, 39, 3, 39, 5, 0, 39, 5]]
    }

    // MARK: - console, userdata

    static func consoleRing() -> [[UInt8]] {
        let hello = Array("Linux version 6.1 booting\n".utf8)
        return [
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(hello.count)] + hello + [3, 0, 8, 4, 5] + Array("ls\r\n".utf8) + [
                2, 5, 0,
            ],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 200] + [UInt8](repeating: 0x61, count: 200) + [2, 0, 5] + Array("hi\n".utf8)
                + [3, 255, 15],
            [1, 0xF0, 0xFF, 0xF0, 0xFF, 0, 0, 0, 0, 0, 50] + [UInt8](repeating: 0x62, count: 50) + [3, 0, 16],
        ]
    }

    static func userdata() -> [[UInt8]] {
        let live = "userdata-d.1.11111111-2222-3333-4444-555555555555.xl"
        let stale = "userdata-d.3.deadbeef-0000-1111-2222-333333333333.libxl-json"
        func blob(_ text: String) -> [UInt8] { [UInt8(text.utf8.count)] + Array(text.utf8) }
        return [
            blob(live) + [2, 0x80, 1, 0, 0, 2] + Array("xl".utf8) + [5] + Array("{...}".utf8) + [0x80, 3, 2, 0, 10]
                + Array("libxl-json".utf8) + [3] + Array("old".utf8),
            blob(stale) + [3, 0, 9] + Array("not-mine!".utf8) + [0] + [1, 0x81, 1, 0, 0, 2] + Array("xl".utf8) + [
                0x82, 2, 2, 2, 0,
            ],
            blob("userdata-l.3.deadbeef-0000-1111-2222-333333333333.domain-userdata-lock") + [1, 0x80, 1, 0, 0, 2]
                + Array("xl".utf8) + [0],
        ]
    }
}
