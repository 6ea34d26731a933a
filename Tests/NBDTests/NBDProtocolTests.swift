import NBDProtocol
import Testing

@Suite("NBDProtocol golden bytes")
struct NBDProtocolTests {
    @Test func requestHeaderCompactAndExtended() {
        let request = NBDRequest(
            flags: .fua, command: .write, cookie: 0x0102_0304_0506_0708, offset: 0x1000, length: 512)
        #expect(
            request.encode()
                == [
                    0x25, 0x60, 0x95, 0x13, 0x00, 0x01, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0x10, 0,
                    0, 0, 2, 0,
                ])
        #expect(
            request.encode(extended: true)
                == [
                    0x21, 0xe4, 0x1c, 0x71, 0x00, 0x01, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0x10, 0,
                    0, 0, 0, 0, 0, 0, 2, 0,
                ])
    }

    @Test func optionGoEncoding() {
        let bytes = NBDOptionRequest.encode(.go, data: NBDOptionRequest.goData(export: "ab", requests: [.blockSize]))
        #expect(
            bytes
                == [
                    0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 7, 0, 0, 0, 10, 0, 0, 0, 2, 0x61, 0x62, 0,
                    1, 0, 3,
                ])
    }

    @Test func greetingAndOptionReply() throws {
        let newstyle: [UInt8] = Array("NBDMAGIC".utf8) + Array("IHAVEOPT".utf8)
        #expect(try NBDGreeting.decode(newstyle) == .newstyle)
        #expect(throws: NBDProtocolError.self) {
            try NBDGreeting.decode(Array("NBDMAGIX".utf8) + Array("IHAVEOPT".utf8))
        }
        let reply: [UInt8] = [0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0x80, 0, 0, 2, 0, 0, 0, 0]
        let header = try NBDOptionReplyHeader.decode(reply)
        #expect(header == NBDOptionReplyHeader(option: 7, type: .error(.policy), length: 0))
        let huge: [UInt8] = Array(reply[0..<16]) + [0x10, 0, 0, 0]
        #expect(throws: NBDProtocolError.self) { try NBDOptionReplyHeader.decode(huge) }
    }

    @Test func infoReplies() throws {
        #expect(
            try NBDInfo.decode([0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x0d])
                == .export(NBDExportInfo(size: 4096, flags: [.hasFlags, .sendFlush, .sendFUA])))
        #expect(
            try NBDInfo.decode([0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0x20, 0, 0])
                == .blockSize(NBDBlockSize(minimum: 1, preferred: 4096, maximum: 0x200000)))
        #expect(throws: NBDProtocolError.self) { try NBDInfo.decode([0, 3, 0, 0]) }
        #expect(
            try NBDOptionReplyData.metaContext([0, 0, 0, 9] + Array("base:allocation".utf8)) == (9, "base:allocation"))
    }

    /// Feeds `bytes` whole and byte by byte; both must give the same events.
    private func decode(
        _ bytes: [UInt8], structured: Bool = true, extended: Bool = false, requests: [UInt64: NBDRequestInfo]
    ) throws -> [String] {
        var results: [[String]] = []
        for chunkSize in [bytes.count, 1] {
            var decoder = NBDReplyDecoder(structuredReplies: structured, extendedHeaders: extended)
            var events: [String] = []
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + chunkSize)
                try bytes[start..<end].withUnsafeBytes { raw in
                    var input = raw
                    while let event = try decoder.next(&input, lookup: { requests[$0] }) {
                        switch event {
                        case .data(let cookie, let offset, let data):
                            events.append("data \(cookie) \(offset) \(Array(data))")
                        default: events.append("\(event)")
                        }
                    }
                }
                start = end
            }
            // Merge split data events so both feeds compare equal.
            results.append(Self.mergeData(events))
        }
        #expect(results[0] == results[1])
        return results[0]
    }

    private static func mergeData(_ events: [String]) -> [String] {
        var merged: [String] = []
        for event in events {
            if event.hasPrefix("data"), let last = merged.last, last.hasPrefix("data") {
                let a = last.split(separator: " ", maxSplits: 3)
                let b = event.split(separator: " ", maxSplits: 3)
                if a[1] == b[1] {
                    let bytesA = a[3].dropFirst().dropLast()
                    let bytesB = b[3].dropFirst().dropLast()
                    merged[merged.count - 1] = "data \(a[1]) \(a[2]) [\(bytesA), \(bytesB)]"
                    continue
                }
            }
            merged.append(event)
        }
        return merged
    }

    @Test func simpleReadReply() throws {
        let reply: [UInt8] = [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0xaa, 0xbb]
        let events = try decode(
            reply, structured: false, requests: [5: NBDRequestInfo(command: .read, offset: 0, length: 2)])
        #expect(events == ["data 5 0 [170, 187]", "done(cookie: 5)"])
    }

    @Test func structuredDataHoleAndDone() throws {
        var bytes: [UInt8] = [0x66, 0x8e, 0x33, 0xef, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 10]
        bytes += [0, 0, 0, 0, 0, 0, 0x10, 0, 1, 2]  // OFFSET_DATA at 4096, 2 bytes
        bytes += [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 12]
        bytes += [0, 0, 0, 0, 0, 0, 0x10, 2, 0, 0, 0, 2]  // OFFSET_HOLE 4098+2, DONE
        let events = try decode(bytes, requests: [7: NBDRequestInfo(command: .read, offset: 4096, length: 4)])
        #expect(events == ["data 7 4096 [1, 2]", "hole(cookie: 7, offset: 4098, length: 2)", "done(cookie: 7)"])
    }

    @Test func errorChunksAndUnknownErrorType() throws {
        var bytes: [UInt8] = [0x66, 0x8e, 0x33, 0xef, 0, 0, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 8]
        bytes += [0, 0, 0, 5, 0, 2, 0x68, 0x69]
        bytes += [0x66, 0x8e, 0x33, 0xef, 0, 1, 0x80, 0x99, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 6, 0, 0, 0, 28, 0, 0]
        let events = try decode(bytes, requests: [3: NBDRequestInfo(command: .write, offset: 0, length: 512)])
        #expect(
            events == [
                "error(cookie: 3, errno: EIO, message: \"hi\", offset: nil)",
                "error(cookie: 3, errno: ENOSPC, message: \"\", offset: nil)", "done(cookie: 3)",
            ])
    }

    @Test func blockStatusCompactAndExtended() throws {
        var bytes: [UInt8] = [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 20]
        bytes += [0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 3, 0, 0, 0x10, 0, 0, 0, 0, 0]
        let events = try decode(bytes, requests: [9: NBDRequestInfo(command: .blockStatus, offset: 0, length: 8192)])
        #expect(events.count == 2)
        #expect(events[0].contains("NBDExtent(length: 4096, flags: 3)"))
        var ext: [UInt8] = [0x6e, 0x8a, 0x27, 0x8c, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 9]
        ext += [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24]
        ext += [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        let extEvents = try decode(
            ext, extended: true, requests: [9: NBDRequestInfo(command: .blockStatus, offset: 0, length: 1 << 33)])
        #expect(extEvents[0].contains("NBDExtent(length: 4294967296, flags: 1)"))
    }

    @Test func hostileReplies() {
        let read = [UInt64(1): NBDRequestInfo(command: .read, offset: 0, length: 512)]
        // Wrong magic.
        #expect(throws: NBDProtocolError.self) {
            try decode([1, 2, 3, 4] + [UInt8](repeating: 0, count: 12), requests: read)
        }
        // Unknown cookie.
        #expect(throws: NBDProtocolError.unknownCookie(2)) {
            try decode([0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], requests: read)
        }
        // Data outside the request.
        var outside: [UInt8] = [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]
        outside += [0, 0, 0, 0, 0, 0, 2, 0, 9]
        #expect(throws: NBDProtocolError.outsideRequest(cookie: 1, offset: 512, length: 1)) {
            try decode(outside, requests: read)
        }
        // Oversize data chunk.
        let oversize: [UInt8] = [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0, 0, 0]
        #expect(throws: NBDProtocolError.self) { try decode(oversize, requests: read) }
        // Unknown non-error chunk type: hard disconnect.
        let unknown: [UInt8] = [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0x42, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        #expect(throws: NBDProtocolError.self) { try decode(unknown, requests: read) }
        // Structured reply when only simple replies were negotiated.
        #expect(throws: NBDProtocolError.self) { try decode(unknown, structured: false, requests: read) }
    }

    @Test func uris() throws {
        let unix = try NBDURI(parsing: "nbds+unix:///disk%201?socket=/tmp/s.sock&tls-verify-peer=false")
        #expect(unix.endpoint == .unix(path: "/tmp/s.sock"))
        #expect(unix.export == "disk 1")
        #expect(unix.tls && !unix.tlsVerifyPeer)
        let tcp = try NBDURI(parsing: "nbd://[::1]:10810/exp?tls-hostname=example.org")
        #expect(tcp.endpoint == .tcp(host: "::1", port: 10810))
        #expect(tcp.tlsHostname == "example.org" && !tcp.tls)
        #expect(try NBDURI(parsing: "nbd://host").endpoint == .tcp(host: "host", port: 10809))
        #expect(throws: NBDURIError.self) { try NBDURI(parsing: "http://host/") }
        #expect(throws: NBDURIError.self) { try NBDURI(parsing: "nbd+unix:///x") }
        #expect(throws: NBDURIError.self) { try NBDURI(parsing: "nbd://h:99999/") }
    }
}
