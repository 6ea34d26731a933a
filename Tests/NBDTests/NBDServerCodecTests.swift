import NBDProtocol
import Testing

/// The server-side codecs: what a server writes must be what the client decoder reads, byte for byte.
@Suite("NBDProtocol server-side golden bytes")
struct NBDServerCodecTests {
    private let ihaveopt: [UInt8] = Array("IHAVEOPT".utf8)
    private let replyMagic: [UInt8] = [0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]

    @Test func greetingAndClientFlags() throws {
        #expect(
            NBDGreeting.encodeNewstyle(flags: [.fixedNewstyle, .noZeroes]) == Array("NBDMAGIC".utf8) + ihaveopt + [
                0, 3,
            ])
        #expect(try NBDGreeting.decode(Array(NBDGreeting.encodeNewstyle(flags: []).prefix(16))) == .newstyle)
        #expect(try NBDClientFlags.decode([0, 0, 0, 3]) == [.fixedNewstyle, .noZeroes])
        #expect(throws: NBDProtocolError.self) { try NBDClientFlags.decode([0, 0, 3]) }
    }

    @Test func optionRequestHeader() throws {
        let bytes = ihaveopt + [0, 0, 0, 7, 0, 0, 0, 10]
        #expect(try NBDOptionRequestHeader.decode(bytes) == NBDOptionRequestHeader(option: 7, length: 10))
        #expect(NBDOptionRequestHeader(option: 7, length: 10).encode() == bytes)
        #expect(NBDOptionRequest.encode(.list) == ihaveopt + [0, 0, 0, 3, 0, 0, 0, 0])
        #expect(throws: NBDProtocolError.badMagic(what: "option", got: 0x4948_4156_454f_5055)) {
            try NBDOptionRequestHeader.decode(Array("IHAVEOPU".utf8) + [0, 0, 0, 7, 0, 0, 0, 0])
        }
    }

    @Test func goDataRoundTripAndLimits() throws {
        let data = NBDOptionRequest.goData(export: "ab", requests: [.blockSize, .name])
        #expect(data == [0, 0, 0, 2, 0x61, 0x62, 0, 2, 0, 3, 0, 1])
        let decoded = try NBDOptionRequest.decodeGoData(data)
        #expect(decoded.export == "ab" && decoded.requests == [3, 1])
        // A name longer than the data, a count that disagrees with the bytes, a NUL, a name over 4096.
        #expect(throws: NBDProtocolError.self) { try NBDOptionRequest.decodeGoData([0, 0, 0, 9, 0x61, 0, 0]) }
        #expect(throws: NBDProtocolError.self) { try NBDOptionRequest.decodeGoData([0, 0, 0, 1, 0x61, 0, 2, 0, 3]) }
        #expect(throws: NBDProtocolError.self) { try NBDOptionRequest.decodeGoData([0, 0, 0, 1, 0, 0, 0]) }
        let long = NBDOptionRequest.goData(export: String(repeating: "x", count: 4097), requests: [])
        #expect(throws: NBDProtocolError.self) { try NBDOptionRequest.decodeGoData(long) }
        #expect(try NBDOptionRequest.decodeExportName(Array("disk".utf8)) == "disk")
    }

    @Test func metaContextData() throws {
        let data = NBDOptionRequest.metaContextData(export: "", queries: ["base:allocation", "qemu:"])
        let decoded = try NBDOptionRequest.decodeMetaContextData(data)
        #expect(decoded.export == "" && decoded.queries == ["base:allocation", "qemu:"])
        #expect(throws: NBDProtocolError.self) { try NBDOptionRequest.decodeMetaContextData(data + [0]) }
        #expect(throws: NBDProtocolError.self) { try NBDOptionRequest.decodeMetaContextData([0, 0, 0, 0, 0, 0, 0, 2]) }
        // A query count far beyond what the bytes could hold is refused before anything is read.
        #expect(throws: NBDProtocolError.self) {
            try NBDOptionRequest.decodeMetaContextData([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
        }
    }

    @Test func optionRepliesDecodeAsTheClientReadsThem() throws {
        let ack = NBDOptionReplyHeader.encode(option: 7, type: .ack)
        #expect(ack == replyMagic + [0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0])
        let policy = NBDOptionReplyHeader.encode(option: 3, type: .error(.policy))
        #expect(Array(policy[12..<16]) == [0x80, 0, 0, 2])
        #expect(
            try NBDOptionReplyHeader.decode(policy) == NBDOptionReplyHeader(option: 3, type: .error(.policy), length: 0)
        )
        for error in [NBDOptionError.unsupported, .tlsRequired, .unknownExport, .tooBig, .extendedHeadersRequired] {
            #expect(NBDOptionError(rawValue: error.rawValue) == error)
            #expect(NBDOptionReplyType(rawValue: NBDOptionReplyType.error(error).rawValue) == .error(error))
        }
        let server = NBDOptionReplyData.encodeServer(name: "disk", description: "a disk")
        #expect(server == [0, 0, 0, 4] + Array("disk".utf8) + Array("a disk".utf8))
        #expect(try NBDOptionReplyData.server(server) == ("disk", "a disk"))
        let context = NBDOptionReplyData.encodeMetaContext(id: 1, name: "base:allocation")
        #expect(try NBDOptionReplyData.metaContext(context) == (1, "base:allocation"))
    }

    @Test func infoItemsRoundTrip() throws {
        let export = NBDInfo.export(NBDExportInfo(size: 4096, flags: [.hasFlags, .sendFlush, .sendFUA]))
        #expect(export.encode() == [0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x0d])
        let size = NBDInfo.blockSize(NBDBlockSize(minimum: 512, preferred: 4096, maximum: 32 << 20))
        #expect(size.encode() == [0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0x02, 0, 0, 0])
        for item in [export, size, .name("n"), .description("d")] { #expect(try NBDInfo.decode(item.encode()) == item) }
        let info = NBDExportInfo(size: 1 << 20, flags: [.hasFlags, .readOnly])
        #expect(NBDOptionReplyData.encodeExportName(info, zeroes: false) == [0, 0, 0, 0, 0, 0x10, 0, 0, 0, 3])
        let padded = NBDOptionReplyData.encodeExportName(info, zeroes: true)
        #expect(padded.count == 134 && padded[10...].allSatisfy { $0 == 0 })
        #expect(try NBDOptionReplyData.exportName(padded) == info)
    }

    @Test func requestHeaderDecoding() throws {
        let write = NBDRequest(flags: .fua, command: .write, cookie: 9, offset: 4096, length: 512)
        for extended in [false, true] {
            let header = try NBDRequestHeader.decode(write.encode(extended: extended), extended: extended)
            #expect(header == NBDRequestHeader(flags: .fua, type: 1, cookie: 9, offset: 4096, length: 512))
            #expect(header.command == .write)
            // Compact and extended magics are not interchangeable.
            #expect(throws: NBDProtocolError.self) {
                try NBDRequestHeader.decode(write.encode(extended: !extended) + [0, 0, 0, 0], extended: extended)
            }
        }
        let unknown = try NBDRequestHeader.decode(
            NBDRequestHeader(type: 42, cookie: 1, offset: 0, length: 0).encode(), extended: false)
        #expect(unknown.command == nil && unknown.type == 42)
        // Payload: WRITE's length in compact headers; with extended headers only under PAYLOAD_LEN.
        #expect(NBDRequestHeader(type: 1, cookie: 1, offset: 0, length: 7).payloadLength(extended: false) == 7)
        #expect(NBDRequestHeader(type: 1, cookie: 1, offset: 0, length: 7).payloadLength(extended: true) == 0)
        let blockStatus = NBDRequestHeader(flags: .payloadLength, type: 7, cookie: 1, offset: 0, length: 12)
        #expect(blockStatus.payloadLength(extended: true) == 12 && blockStatus.payloadLength(extended: false) == 0)
    }

    /// Feeds `bytes` whole and byte by byte to a request decoder; both must give the same events.
    private func requests(_ bytes: [UInt8], extended: Bool = false, maxPayload: UInt64 = 1 << 20) throws -> [String] {
        var results: [[String]] = []
        for size in [bytes.count, 1] {
            var decoder = NBDRequestDecoder(extendedHeaders: extended, maxPayload: maxPayload)
            var events: [String] = []
            var payload: [UInt8] = []
            for start in stride(from: 0, to: bytes.count, by: size) {
                try bytes[start..<min(bytes.count, start + size)].withUnsafeBytes { raw in
                    var input = raw
                    while let event = try decoder.next(&input) {
                        switch event {
                        case .request(let header):
                            if !payload.isEmpty { events.append("payload \(payload)") }
                            payload = []
                            events.append("request \(header.type) \(header.cookie) \(header.offset) \(header.length)")
                        case .payload(let piece): payload += Array(piece)
                        }
                    }
                }
            }
            if !payload.isEmpty { events.append("payload \(payload)") }
            #expect(decoder.isIdle)
            results.append(events)
        }
        #expect(results[0] == results[1])
        return results[0]
    }

    @Test func requestDecoderStreamsPayloads() throws {
        let write = NBDRequest(command: .write, cookie: 1, offset: 0, length: 3).encode() + [7, 8, 9]
        let read = NBDRequest(command: .read, cookie: 2, offset: 512, length: 512).encode()
        #expect(try requests(write + read) == ["request 1 1 0 3", "payload [7, 8, 9]", "request 0 2 512 512"])
        let extended =
            NBDRequest(flags: .payloadLength, command: .write, cookie: 3, offset: 0, length: 2).encode(extended: true)
            + [1, 2]
        #expect(try requests(extended, extended: true) == ["request 1 3 0 2", "payload [1, 2]"])
        // A payload over the limit ends the connection; so does a bad magic, as soon as its 4 bytes are in.
        let huge = NBDRequest(command: .write, cookie: 1, offset: 0, length: 1 << 21).encode()
        #expect(throws: NBDProtocolError.oversize(what: "request payload", length: 1 << 21, limit: 1 << 20)) {
            try requests(huge)
        }
        var decoder = NBDRequestDecoder(extendedHeaders: false)
        #expect(throws: NBDProtocolError.self) {
            try [0x12, 0x34, 0x56, 0x78].withUnsafeBytes { raw in
                var input = raw
                _ = try decoder.next(&input)
            }
        }
    }

    @Test func replyHeaders() throws {
        let simple = NBDReplyHeader.simple(error: 22, cookie: 5)
        #expect(simple.encode() == [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 5])
        let structured = NBDReplyHeader.chunk(extended: false, done: true, type: 1, cookie: 5, offset: 0, length: 9)
        #expect(structured.encode() == [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 9])
        let extended = NBDReplyHeader.chunk(extended: true, done: false, type: 2, cookie: 5, offset: 4096, length: 12)
        #expect(
            extended.encode() == [
                0x6e, 0x8a, 0x27, 0x8c, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0,
                0, 12,
            ])
        for header in [simple, structured, extended] {
            #expect(try NBDReplyHeader.decode(header.encode()) == header)
            #expect(
                NBDReplyHeader.size(magic: header.encode().prefix(4).reduce(0) { $0 << 8 | UInt32($1) })
                    == header.encode().count)
        }
        #expect(NBDErrno(rawValue: NBDErrno.eoverflow.rawValue) == .eoverflow)
        #expect(NBDErrno.enotsup.rawValue == 95 && NBDErrno.eshutdown.rawValue == 108)
    }

    @Test func chunkPayloadsAreReadByTheClientDecoder() throws {
        let request = NBDRequestInfo(command: .read, offset: 4096, length: 8192)
        let hole =
            NBDReplyHeader.chunk(extended: false, done: false, type: 2, cookie: 1, offset: 4096, length: 12)
            .encode() + NBDChunkPayload.offsetHole(offset: 4096, length: 4096)
        let data =
            NBDReplyHeader.chunk(extended: false, done: false, type: 1, cookie: 1, offset: 4096, length: 12)
            .encode() + NBDChunkPayload.offsetDataPrefix(offset: 8192) + [1, 2, 3, 4]
        let error = NBDChunkPayload.error(.eio, message: "bad", offset: 8196)
        let failed =
            NBDReplyHeader.chunk(
                extended: false, done: true, type: NBDChunkPayload.errorType(offset: 8196), cookie: 1, offset: 4096,
                length: UInt64(error.count)
            ).encode() + error
        var decoder = NBDReplyDecoder(structuredReplies: true)
        var events: [NBDReplyEvent] = []
        let stream = hole + data + failed
        try stream.withUnsafeBytes { raw in
            var input = raw
            while let event = try decoder.next(&input, lookup: { _ in request }) {
                if case .data(let cookie, let offset, let bytes) = event {
                    #expect(cookie == 1 && offset == 8192 && Array(bytes) == [1, 2, 3, 4])
                } else {
                    events.append(event)
                }
            }
        }
        #expect(
            events == [
                .hole(cookie: 1, offset: 4096, length: 4096),
                .error(cookie: 1, errno: .eio, message: "bad", offset: 8196), .done(cookie: 1),
            ])
        for extended in [false, true] {
            let extents = [NBDExtent(length: 4096, flags: 3), NBDExtent(length: 8192, flags: 0)]
            let payload = NBDChunkPayload.blockStatus(contextID: 1, extents: extents, extended: extended)
            #expect(payload.count == (extended ? 8 + 32 : 4 + 16))
            let bytes =
                NBDReplyHeader.chunk(
                    extended: extended, done: true, type: NBDChunkPayload.blockStatusType(extended: extended),
                    cookie: 2,
                    offset: 0, length: UInt64(payload.count)
                ).encode() + payload
            var decoder = NBDReplyDecoder(structuredReplies: true, extendedHeaders: extended)
            var seen: [NBDReplyEvent] = []
            try bytes.withUnsafeBytes { raw in
                var input = raw
                while let event = try decoder.next(
                    &input, lookup: { _ in NBDRequestInfo(command: .blockStatus, offset: 0, length: 12288) })
                {
                    seen.append(event)
                }
            }
            #expect(seen == [.blockStatus(cookie: 2, contextID: 1, extents: extents), .done(cookie: 2)])
        }
    }
}
