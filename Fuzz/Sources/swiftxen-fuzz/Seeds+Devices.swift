import NBDProtocol
import NetifProtocol
import XenCore

/// Seeds of the netif, vchan and NBD server targets, built with the project's encoders where one exists.
extension Seeds {
    static func le16(_ value: Int) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF)] }

    // MARK: - netif

    /// A netif-back action 1: a structured tx request (`kind` even: flags in bits 1-5).
    static func txRequest(slot: UInt8, flags: NetifTxFlags, grant: UInt8, offset: Int, id: Int, size: Int) -> [UInt8] {
        [1, slot, UInt8(flags.rawValue) << 1, grant] + le16(offset) + le16(id) + le16(size)
    }

    /// Ethernet + IPv4 + UDP, checksum blank.
    static func udpFrame(_ payload: [UInt8]) -> [UInt8] {
        let ethernet: [UInt8] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]
        let total = 20 + 8 + payload.count
        let ip: [UInt8] = [
            0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]
        let udp: [UInt8] = [
            0x30, 0x39, 0x00, 0x35, UInt8((8 + payload.count) >> 8), UInt8((8 + payload.count) & 0xFF), 0, 0,
        ]
        return ethernet + ip + udp + payload
    }

    /// Ethernet + VLAN + IPv6 + TCP, checksum blank.
    static func tcp6Frame(_ payload: [UInt8]) -> [UInt8] {
        let ethernet: [UInt8] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0, 5, 0x86, 0xDD]
        let length = 20 + payload.count
        let ip: [UInt8] =
            [0x60, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xFF), 6, 64] + [UInt8](repeating: 0, count: 15) + [1]
            + [UInt8](repeating: 0, count: 15) + [2]
        let tcp: [UInt8] = [0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
        return ethernet + ip + tcp + payload
    }

    static func netifBack() -> [[UInt8]] {
        // A GSO frame in two fragments with a descriptor between them, drained and answered.
        var frame: [UInt8] = [0x0F, 0, 0, 0, 0]
        frame += txRequest(slot: 0, flags: [.moreData, .extraInfo], grant: 1, offset: 0, id: 1, size: 1514)
        frame += [1, 1, 1] + le16(1448) + [1]  // extra: GSO tcpv4, no more
        frame += txRequest(slot: 2, flags: [], grant: 2, offset: 0, id: 2, size: 514)
        frame += [3, 3, 4, 0]
        // Three rx buffers posted, then a 6000-byte frame with a GSO descriptor into them.
        for id in 0..<3 {
            let page = PageBuffer(pages: 1)
            NetifRxRequest(id: UInt16(10 + id), grant: GrantRef(UInt32(20 + id))).encode(into: page)
            frame += [6, UInt8(id)] + page.bytes.prefix(Netif.rxEntrySize)
        }
        frame += [7, 0, 1, 3, 8] + le16(6000) + [1]
        let udp = udpFrame(Array("hello, netback".utf8))
        let tcp = tcp6Frame(Array("GET / HTTP/1.0\r\n\r\n".utf8))
        frame += [9, UInt8(udp.count)] + udp + [0]
        frame += [9, UInt8(tcp.count)] + tcp + [0]
        // Multicast control, a runt frame and a request that leaves its page.
        var control: [UInt8] = [0x09, 0, 0, 0, 0]
        control += txRequest(slot: 0, flags: [.extraInfo], grant: 1, offset: 0, id: 1, size: 0)
        control += [1, 1, 1 | 1 << 2]  // extra: multicast add
        control += txRequest(slot: 2, flags: [], grant: 2, offset: 0, id: 2, size: 10)
        control += txRequest(slot: 3, flags: [], grant: 3, offset: 4000, id: 3, size: 200)
        control += [3, 4, 5, 2]
        // A frontend that claims a whole ring of requests and more.
        let hostile: [UInt8] = [0x01, 0, 0, 0, 0, 2, 0, 0xFF, 0xFF, 0, 0, 4, 0, 0, 7, 3, 0xFF, 0xFF, 0xFF, 0xFF, 8]
        return [frame, control, hostile]
    }

    static func netifFront() -> [[UInt8]] {
        // 256 buffers posted; a 1500-byte frame in two slots with a GSO descriptor between them.
        var seed: [UInt8] = [0x07, 4]
        seed += [6, 0, 12, 1] + le16(0) + le16(1002)
        let extra = PageBuffer(pages: 1)
        NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)).encode(into: extra)
        seed += [5, 1] + extra.bytes.prefix(Netif.rxEntrySize)
        seed += [6, 2, 0, 1] + le16(0) + le16(502) + [7, 1, 1, 3, 8]
        // A frame of two fragments and a descriptor sent, answered OKAY, NULL, OKAY.
        seed += [0, 1, 1] + [1, 0] + le16(0) + le16(0) + [1, 1] + le16(0) + le16(1) + [1, 2] + le16(1) + le16(0)
        seed += [2, 1, 1, 3, 3]
        // An error response, a response for a buffer posted in another slot, an unknown tx id.
        let hostile: [UInt8] =
            [0x01, 4, 6, 0, 0, 1] + le16(0) + le16(0) + [7, 1, 1, 1, 8] + [6, 0, 0, 0, 9] + le16(0) + le16(100)
            + [7, 1, 1, 1, 8] + [0, 0, 0, 1, 0] + le16(77) + le16(0) + [2, 1, 1, 1, 3]
        return [seed, hostile]
    }

    // MARK: - vchan

    static func vchanRing() -> [[UInt8]] {
        let hello = Array("hello over vchan".utf8)
        // A client on in-page rings (orders 10 and 11): the peer writes, we read, we write, it consumes.
        let client: [UInt8] =
            [0] + le16(10) + le16(11) + [UInt8](repeating: 0, count: 8) + [1, 1, 3, 3]
            + [0, UInt8(hello.count)] + hello + [4, 255, 0] + [5, 6] + Array("world!".utf8) + [3, 0xFF, 0xFF]
            + [6, 0, 4, 1] + [6, 0, 4, 0] + [7, 0, 1] + [7, 2, 0] + [8]
        // A server on external rings (4 KiB to read, 16 KiB to write), wrapping both.
        var server: [UInt8] = [1] + le16(1024) + le16(4096) + [0xF0, 0x0F, 0xF0, 0x0F, 0, 0, 0, 0] + [2, 1, 0, 0]
        for _ in 0..<20 { server += [0, 255] + [UInt8](repeating: 0x61, count: 255) + [4, 0, 1] }
        for _ in 0..<20 { server += [5, 255] + [UInt8](repeating: 0x62, count: 255) + [3, 0, 2] }
        // A client whose server wrote order 12 and 10, then jumps its producer index.
        let hostile: [UInt8] =
            [0] + le16(12) + le16(10) + [UInt8](repeating: 0, count: 8) + [1, 1, 0, 0]
            + [1, 0xFF, 0xFF, 0xFF, 0x7F, 3, 4, 16, 0] + [2, 0x10, 0x00, 0x10] + [1, 0, 0, 0, 0x80, 0, 5, 1, 0x41]
        return [client, server, hostile]
    }

    // MARK: - NBD server

    static func request(
        _ type: NBDCommand, _ flags: NBDCommandFlags = [], cookie: UInt64, _ offset: UInt64,
        _ length: UInt64, extended: Bool = false
    ) -> [UInt8] {
        NBDRequestHeader(flags: flags, type: type.rawValue, cookie: cookie, offset: offset, length: length)
            .encode(extended: extended)
    }

    /// An nbd-server-request input: the configuration byte, the sizes of "disk" (1 MiB unless said) and "other"
    /// (4 KiB), the chunk size, then what the client sends.
    static func serverInput(config: UInt8, disk: Int = 1 << 20, chunk: UInt8 = 0, _ stream: [UInt8]) -> [UInt8] {
        [config] + le16(disk & 0xFFFF) + le16(disk >> 16) + [0, 0x10, 0, 0, 0, 0, 0, 0] + [chunk] + stream
    }

    static func nbdServerRequests() -> [[UInt8]] {
        let fixed: [UInt8] = [0, 0, 0, 3]
        let go = NBDOptionRequest.encode(.go, data: NBDOptionRequest.goData(export: "disk", requests: [.name]))
        let negotiate =
            NBDOptionRequest.encode(.structuredReply)
            + NBDOptionRequest.encode(
                .setMetaContext, data: NBDOptionRequest.metaContextData(export: "disk", queries: ["base:allocation"]))
            + NBDOptionRequest.encode(.list)
            + NBDOptionRequest.encode(.info, data: NBDOptionRequest.goData(export: "disk", requests: []))
            + NBDOptionRequest.encode(
                .listMetaContext, data: NBDOptionRequest.metaContextData(export: "disk", queries: []))
            + NBDOptionRequest.encode(.peekExport) + go
        let requests =
            request(.read, cookie: 1, 0, 4096) + request(.write, cookie: 2, 4096, 512)
            + [UInt8](repeating: 0x77, count: 512) + request(.flush, cookie: 3, 0, 0)
            + request(.trim, cookie: 4, 0, 512)
            + request(.blockStatus, .reqOne, cookie: 5, 0, 1 << 20) + request(.cache, cookie: 6, 1, 1)
            + request(.writeZeroes, [.noHole, .fastZero], cookie: 7, 512, 512) + request(.read, cookie: 8, 1 << 20, 512)
            + NBDRequestHeader(type: 99, cookie: 9, offset: 0, length: 0).encode()
            + request(.write, .fua, cookie: 10, 3, 512) + [UInt8](repeating: 0x78, count: 512)
            + request(.disconnect, cookie: 11, 0, 0)
        let extended =
            fixed + NBDOptionRequest.encode(.extendedHeaders) + go
            + request(.write, .payloadLength, cookie: 1, 0, 1024, extended: true) + [UInt8](repeating: 1, count: 1024)
            + request(.read, cookie: 2, 512, 1 << 21, extended: true)
            + request(.read, .payloadLength, cookie: 3, 0, 16, extended: true) + [UInt8](repeating: 2, count: 16)
            + request(.disconnect, cookie: 4, 0, 0, extended: true)
        // EXPORT_NAME without NO_ZEROES in 7-byte pieces, then a write to the read-only export.
        let exportName =
            [0, 0, 0, 1] + NBDOptionRequest.encode(.exportName, data: Array("other".utf8))
            + request(.write, cookie: 1, 0, 16) + [UInt8](repeating: 3, count: 16) + request(.read, cookie: 2, 0, 4096)
        // TLS required: options before STARTTLS are refused, then GO under TLS; an oversized option skipped. The
        // 36-byte pieces end the first one right after STARTTLS.
        let tls =
            fixed + NBDOptionRequest.encode(.list) + NBDOptionRequest.encode(.startTLS)
            + NBDOptionRequestHeader(option: 9, length: 2000).encode() + [UInt8](repeating: 0, count: 2000) + go
            + request(.flush, cookie: 1, 0, 0)
        // TLS optional: STARTTLS, then a meta context chosen for "other" and GO for the default export "": block
        // status has no context; DF reads, structured.
        let optional =
            fixed + NBDOptionRequest.encode(.startTLS) + NBDOptionRequest.encode(.structuredReply)
            + NBDOptionRequest.encode(
                .setMetaContext, data: NBDOptionRequest.metaContextData(export: "other", queries: ["base:allocation"]))
            + NBDOptionRequest.encode(.go, data: NBDOptionRequest.goData(export: "", requests: [.description]))
            + request(.blockStatus, cookie: 1, 0, 4096) + request(.read, .dontFragment, cookie: 2, 0, 8192)
            + request(.read, cookie: 3, 0, 0) + request(.cache, cookie: 4, 0, 1 << 21)
            + request(.disconnect, cookie: 5, 0, 0)
        // LIST, an unknown option with data, STARTTLS on a server without TLS, then ABORT.
        let abort =
            fixed + NBDOptionRequest.encode(.list) + NBDOptionRequestHeader(option: 42, length: 3).encode() + [1, 2, 3]
            + NBDOptionRequest.encode(.startTLS) + NBDOptionRequest.encode(.abort)
        // At most 8 options: the ninth closes the connection.
        let flood = fixed + (0..<9).flatMap { _ in NBDOptionRequest.encode(.structuredReply) }
        // TLS required and the TLS handshake never finishes: the client's next bytes close the connection.
        let stalled = fixed + NBDOptionRequest.encode(.startTLS) + go
        return [
            serverInput(config: 0x10, fixed + negotiate + requests), serverInput(config: 0x10, extended),
            serverInput(config: 0x00, disk: 4096, chunk: 7, exportName),
            serverInput(config: 0x02, disk: 4096, chunk: 36, tls),
            serverInput(config: 0x11, optional), serverInput(config: 0x00, abort), serverInput(config: 0x40, flood),
            serverInput(config: 0x82, chunk: 20, stalled),
        ]
    }
}
