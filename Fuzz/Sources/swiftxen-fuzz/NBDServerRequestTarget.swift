import NBDProtocol
import NBDServer

/// What an NBD client sends our server, in any chunking: the option haggling (``NBDServerHandshake``, with
/// STARTTLS reported done at once) and then the transmission-phase requests (``NBDRequestDecoder`` and
/// ``NBDServerSession/check(_:)``), as NBDServerConnection runs them.
///
/// Invariants: every option reply the server sends is well framed; the handshake ends at most once
/// (`close` or `transmit` is its last action, and it takes nothing afterwards); a session honours the TLS mode
/// and what was negotiated; a request's payload arrives whole before the next header; an accepted request lies
/// inside the export, aligned, within the advertised maximum and allowed by the export's flags (a WRITE's
/// payload is exactly its length); every request gets a reply our client decodes as its answer.
///
/// Input: a configuration byte (TLS mode, OPT_LIST and extended headers allowed, export flags), the export's
/// size, a chunk size, then the client's byte stream.
enum NBDServerRequestTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let config = input.byte()
        let tlsMode: NBDServerTLSMode = [.off, .optional, .required, .off][Int(config & 3)]
        var flags: NBDTransmissionFlags = [.hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes]
        if config & 16 != 0 { flags.formUnion([.sendDF, .sendCache, .sendFastZero]) }
        if config & 32 != 0 { flags.insert(.readOnly) }
        let exports = [
            NBDExportDescription(
                name: "disk", description: "a disk", info: NBDExportInfo(size: UInt64(input.uint32()), flags: flags),
                blockSize: NBDBlockSize(minimum: 512, preferred: 4096, maximum: 1 << 20)),
            NBDExportDescription(
                name: "other", info: NBDExportInfo(size: input.uint64(), flags: flags.union(.readOnly)),
                blockSize: NBDBlockSize(minimum: 1, preferred: 4096, maximum: 32 << 20)),
        ]
        var handshake = NBDServerHandshake(exports: exports, tlsMode: tlsMode)
        handshake.allowList = config & 4 == 0
        handshake.allowExtendedHeaders = config & 8 == 0
        handshake.maxOptionLength = 1024
        let chunk = Int(input.byte())
        var stream = input.rest()[...]
        while !stream.isEmpty {
            let piece = chunk == 0 ? stream : stream.prefix(chunk)
            stream = stream.dropFirst(piece.count)
            let actions = handshake.receive(Array(piece))
            for (index, action) in actions.enumerated() {
                let last = index == actions.count - 1
                switch action {
                case .send(let bytes):
                    if !optionRepliesFramed(bytes) {
                        // Only EXPORT_NAME's reply (size, flags, perhaps 124 zeroes) is not an option reply.
                        let next = last ? nil : actions[index + 1]
                        guard case .transmit? = next, bytes.count == 10 || bytes.count == 134 else {
                            return require(false, "an ill-framed option reply of \(bytes.count) bytes")
                        }
                    }
                case .startTLS:
                    require(tlsMode != .off && last, "STARTTLS accepted with TLS \(tlsMode)")
                    handshake.tlsStarted()
                    require(handshake.isTLS, "TLS not recorded")
                case .close:
                    require(last, "actions after close")
                    return require(handshake.receive([0, 1, 2]).isEmpty, "the handshake went on after close")
                case .transmit(let session, let leftover):
                    require(last, "actions after transmit")
                    require(handshake.receive([0, 1, 2]).isEmpty, "the handshake went on after transmit")
                    check(session, exports: exports, tlsMode: tlsMode)
                    return transmission(session, Array(leftover) + Array(stream), chunk: chunk)
                }
            }
        }
    }

    /// Option replies back to back: magic, option, type, length and that many bytes each.
    static func optionRepliesFramed(_ bytes: [UInt8]) -> Bool {
        var rest = bytes[...]
        while !rest.isEmpty {
            guard let header = try? NBDOptionReplyHeader.decode(Array(rest.prefix(NBDOptionReplyHeader.size))),
                rest.count >= NBDOptionReplyHeader.size + Int(header.length)
            else { return false }
            rest = rest.dropFirst(NBDOptionReplyHeader.size + Int(header.length))
        }
        return !bytes.isEmpty
    }

    static func check(_ session: NBDServerSession, exports: [NBDExportDescription], tlsMode: NBDServerTLSMode) {
        require(exports.indices.contains(session.exportIndex), "export \(session.exportIndex)")
        require(session.export == exports[session.exportIndex], "session export differs from the list")
        require(!session.extendedHeaders || session.structuredReplies, "extended headers without structured replies")
        require(session.allocationContext == nil || session.structuredReplies, "metadata without structured replies")
        require(tlsMode != .required || session.tls, "transmission without TLS on a TLS-only server")
        require(tlsMode != .off || !session.tls, "TLS on a server without TLS")
    }

    /// NBDServerConnection.process: requests and their payloads until `DISC` or a protocol error.
    static func transmission(_ session: NBDServerSession, _ bytes: [UInt8], chunk: Int) {
        var decoder = NBDRequestDecoder(extendedHeaders: session.extendedHeaders, maxPayload: session.maxPayload)
        var payloadDue: UInt64 = 0
        var position = 0
        bytes.withUnsafeBytes { all in
            while position < bytes.count {
                let end = chunk == 0 ? bytes.count : min(bytes.count, position + chunk)
                var window = UnsafeRawBufferPointer(rebasing: all[position..<end])
                position = end
                while true {
                    let event: NBDRequestEvent?
                    do { event = try decoder.next(&window) } catch { return }  // the connection is dropped
                    guard let event else { break }
                    switch event {
                    case .payload(let piece):
                        require(UInt64(piece.count) <= payloadDue, "\(piece.count) payload bytes, \(payloadDue) due")
                        payloadDue -= UInt64(piece.count)
                    case .request(let header):
                        require(payloadDue == 0, "a request header inside \(payloadDue) bytes of payload")
                        payloadDue = header.payloadLength(extended: session.extendedHeaders)
                        require(payloadDue <= session.maxPayload, "payload of \(payloadDue) accepted")
                        require(decoder.pendingPayload == payloadDue, "decoder and header disagree on the payload")
                        if !request(header, session) { return }
                    }
                }
            }
        }
    }

    /// Checks one request as the server does; false after `DISC`.
    static func request(_ header: NBDRequestHeader, _ session: NBDServerSession) -> Bool {
        let export = session.export
        let flags = export.info.flags
        let payload = header.payloadLength(extended: session.extendedHeaders)
        func inside(_ offset: UInt64, _ length: UInt64, aligned: Bool) {
            let (end, overflow) = offset.addingReportingOverflow(length)
            require(!overflow && end <= export.info.size, "\(offset)+\(length) accepted on \(export.info.size) bytes")
            let minimum = UInt64(max(export.blockSize.minimum, 1))
            require(offset % minimum == 0 && (!aligned || length % minimum == 0), "\(offset)+\(length) unaligned")
        }
        let reply: [UInt8]
        switch session.check(header) {
        case .failure(let refusal):
            reply = session.errorReply(cookie: header.cookie, offset: header.offset, refusal)
            replyDecodes(reply, header, session, error: true)
            return true
        case .success(let operation):
            require(header.command != nil, "unknown command \(header.type) accepted")
            if case .write = operation {} else { require(payload == 0, "payload on an accepted \(operation)") }
            switch operation {
            case .disconnect: return false
            case .flush: require(flags.contains(.sendFlush), "flush not offered")
            case .read(let offset, let length, _):
                inside(offset, length, aligned: true)
                require(length <= session.maxPayload, "read of \(length) beyond the maximum")
            case .write(let offset, let length, _):
                inside(offset, length, aligned: true)
                require(!flags.contains(.readOnly), "write on a read-only export")
                require(payload == length && length <= session.maxPayload, "write of \(length), payload \(payload)")
            case .trim(let offset, let length, _):
                inside(offset, length, aligned: true)
                require(!flags.contains(.readOnly) && flags.contains(.sendTrim), "trim not allowed")
            case .writeZeroes(let offset, let length, _, _, let fast):
                inside(offset, length, aligned: true)
                require(!flags.contains(.readOnly) && flags.contains(.sendWriteZeroes), "write zeroes not allowed")
                require(!fast || flags.contains(.sendFastZero), "fast zero not offered")
            case .cache(let offset, let length):
                inside(offset, length, aligned: false)
                require(flags.contains(.sendCache), "cache not offered")
            case .blockStatus(let offset, let length, _):
                inside(offset, length, aligned: false)
                require(session.allocationContext != nil, "block status without a context")
            }
            if case .read = operation { return true }
            if case .blockStatus = operation { return true }
            replyDecodes(session.okReply(cookie: header.cookie, offset: header.offset), header, session, error: false)
            return true
        }
    }

    /// The reply the server sends must decode, for our client, as the answer to this request.
    static func replyDecodes(_ reply: [UInt8], _ header: NBDRequestHeader, _ session: NBDServerSession, error: Bool) {
        let info = NBDRequestInfo(
            command: header.command ?? .flush, offset: header.offset, length: min(header.length, ~header.offset))
        var decoder = NBDReplyDecoder(
            structuredReplies: session.structuredReplies, extendedHeaders: session.extendedHeaders)
        var sawError = false
        var done = false
        reply.withUnsafeBytes { raw in
            var window = raw
            while true {
                let event: NBDReplyEvent?
                do {
                    event = try decoder.next(&window) { $0 == header.cookie ? info : nil }
                } catch {
                    return require(false, "our client cannot decode the reply: \(error)")
                }
                guard let event else { break }
                switch event {
                case .error(let cookie, _, _, _): sawError = cookie == header.cookie
                case .done(let cookie): done = cookie == header.cookie
                default: require(false, "unexpected reply event \(event)")
                }
            }
        }
        require(done && sawError == error && decoder.isIdle, "reply for \(header) did not end as expected")
    }
}
