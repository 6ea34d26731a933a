import NBDProtocol

/// The transmission-phase reply stream an NBD server writes, through `NBDReplyDecoder` in any chunking, with
/// the caller sometimes reading data runs itself (`pendingData`/`skipData`, the direct data path). Every
/// event must stay inside the request it answers; simple read replies deliver the request's bytes in order;
/// a cookie is retired at its last reply.
///
/// Input: a flags byte (bit 0 structured, bit 1 extended, bits 2-7 chunk size), a request count and each
/// request (command, offset, length), a byte of skip pattern, then the reply stream.
enum NBDReplyTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let flags = input.byte()
        let extended = flags & 2 == 2
        // Extended headers imply structured replies (a server then sends only extended reply chunks), as our
        // client decodes them: a read answered in chunks is not held to the in-order, whole-length rule of a
        // simple reply (the client checks that chunks tile the request).
        let structured = flags & 1 == 1 || extended
        let chunk = Int(flags >> 2)
        var requests: [UInt64: NBDRequestInfo] = [:]
        let commands: [NBDCommand] = [.read, .write, .flush, .trim, .blockStatus, .writeZeroes, .cache, .read]
        for cookie in 1...UInt64(input.int(in: 1...6)) {
            let command = commands[Int(input.byte() % 8)]
            let offset = UInt64(input.uint16()) * 512
            let length = UInt64(input.uint16())
            requests[cookie] = NBDRequestInfo(command: command, offset: offset, length: length)
        }
        let skipPattern = input.byte()
        let stream = input.rest()
        var decoder = NBDReplyDecoder(
            structuredReplies: structured, extendedHeaders: extended, maxBufferedChunk: 1 << 16)
        var expected: [UInt64: UInt64] = [:]  // next byte of a simple read reply
        var position = 0
        var round = 0
        stream.withUnsafeBytes { all in
            while position < stream.count {
                let end = chunk == 0 ? stream.count : min(stream.count, position + chunk)
                var window = UnsafeRawBufferPointer(rebasing: all[position..<end])
                while true {
                    round += 1
                    if skipPattern & (1 << (round % 8)) != 0, let pending = decoder.pendingData, !window.isEmpty {
                        // The caller reads part of the run straight into its pages.
                        let take = min(UInt64(window.count), pending.remaining, 1 + UInt64(skipPattern) % 97)
                        decoder.skipData(take)
                        window = UnsafeRawBufferPointer(rebasing: window[Int(take)...])
                        note(
                            cookie: pending.cookie, offset: pending.offset, count: take, requests, &expected, structured
                        )
                        continue
                    }
                    let event: NBDReplyEvent?
                    do {
                        event = try decoder.next(&window) { requests[$0] }
                    } catch {
                        return  // a protocol error drops the connection
                    }
                    guard let event else { break }
                    check(event, &requests, &expected, structured: structured)
                }
                position = end
            }
        }
    }

    static func note(
        cookie: UInt64, offset: UInt64, count: UInt64, _ requests: [UInt64: NBDRequestInfo],
        _ expected: inout [UInt64: UInt64], _ structured: Bool
    ) {
        guard let request = requests[cookie] else {
            require(false, "data for retired or unknown cookie \(cookie)")
            return
        }
        require(request.command == .read, "data for a \(request.command)")
        require(
            offset >= request.offset && offset + count <= request.offset + request.length,
            "data \(offset)+\(count) outside request \(request.offset)+\(request.length)")
        if !structured {
            let next = expected[cookie] ?? request.offset
            require(offset == next, "simple reply data at \(offset), expected \(next)")
            expected[cookie] = next + count
        }
    }

    static func check(
        _ event: NBDReplyEvent, _ requests: inout [UInt64: NBDRequestInfo], _ expected: inout [UInt64: UInt64],
        structured: Bool
    ) {
        switch event {
        case .data(let cookie, let offset, let bytes):
            note(cookie: cookie, offset: offset, count: UInt64(bytes.count), requests, &expected, structured)
        case .hole(let cookie, let offset, let length):
            guard let request = requests[cookie] else { return require(false, "hole for unknown cookie \(cookie)") }
            require(
                length > 0 && offset >= request.offset && offset + length <= request.offset + request.length,
                "hole \(offset)+\(length) outside request")
        case .blockStatus(let cookie, _, let extents):
            require(requests[cookie]?.command == .blockStatus, "block status for cookie \(cookie)")
            require(!extents.isEmpty, "empty block status")
        case .error(let cookie, _, let message, let offset):
            guard let request = requests[cookie] else { return require(false, "error for unknown cookie \(cookie)") }
            require(message.utf8.count <= 65535, "error message too long")
            if let offset {
                require(offset >= request.offset && offset < request.offset + request.length, "error offset outside")
            }
            expected[cookie] = nil
        case .done(let cookie):
            guard let request = requests.removeValue(forKey: cookie) else {
                return require(false, "done for unknown cookie \(cookie)")
            }
            if !structured, request.command == .read, let next = expected[cookie] {
                require(next == request.offset + request.length, "simple read reply ended early at \(next)")
            }
        }
    }
}

/// The handshake replies a server writes, decoded in the order the client's negotiation reads them: the
/// greeting, oldstyle export data or the handshake flags, then option replies (header, data) with each
/// data decoder, and an EXPORT_NAME reply.
///
/// Input: the server's byte stream.
enum NBDHandshakeTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        guard let greeting = try? NBDGreeting.decode(input.bytes(16)) else { return }
        if greeting == .oldstyle {
            var reader = NBDReader(input.bytes(136), what: "oldstyle handshake")
            _ = try? reader.uint64()
            return
        }
        _ = input.bytes(2)  // handshake flags: any value is legal
        while !input.isEmpty {
            guard
                let header = try? NBDOptionReplyHeader.decode(
                    input.bytes(NBDOptionReplyHeader.size), maxLength: 1 << 16)
            else { return }
            require(header.length <= 1 << 16, "option reply longer than the limit")
            let payload = input.bytes(Int(header.length))
            guard payload.count == Int(header.length) else { return }
            switch header.type {
            case .info:
                if case .blockSize(let size)? = try? NBDInfo.decode(payload), size.isValid {
                    require(
                        size.minimum <= size.preferred && size.preferred <= size.maximum,
                        "block size \(size) passed as valid")
                }
            case .server:
                if let (name, description) = try? NBDOptionReplyData.server(payload) {
                    // Each byte decodes to at most one scalar (invalid UTF-8 becomes U+FFFD).
                    require(
                        name.unicodeScalars.count + description.unicodeScalars.count <= payload.count - 4,
                        "NBD_REP_SERVER decoded to more characters than it had bytes")
                }
            case .metaContext: _ = try? NBDOptionReplyData.metaContext(payload)
            case .ack, .error: _ = try? NBDOptionReplyData.exportName(payload)
            case .unknown: return
            }
        }
    }
}

/// NBD URIs as a user or a config file gives them: the parser and every accessor.
///
/// Input: the URI text.
enum NBDURITarget {
    static func run(_ data: [UInt8]) {
        guard let uri = try? NBDURI(parsing: String(decoding: data, as: UTF8.self)) else { return }
        _ = uri.description
        _ = uri.tlsHostname
        _ = uri.tlsVerifyPeer
        switch uri.endpoint {
        case .tcp(let host, let port):
            require(!host.isEmpty && (1...65535).contains(port), "tcp endpoint \(host):\(port)")
        case .unix(let path): require(!path.isEmpty && uri.query["socket"] == path, "unix endpoint \(path)")
        }
    }
}
