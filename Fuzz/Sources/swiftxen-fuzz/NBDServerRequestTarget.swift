import NBDProtocol

/// What an NBD client sends our server, in any chunking: the option haggling (`NBDServerHandshake`: fixed
/// newstyle, STARTTLS, INFO/GO, LIST, the meta contexts, EXPORT_NAME, ABORT, oversized and unknown options), then
/// the transmission-phase requests (`NBDRequestDecoder` and `NBDServerSession.check`), as NBDServerConnection
/// runs them. All of it is NBDProtocol's pure server core: no socket, no device, no TLS library.
///
/// Invariants: every option gets one well-framed answer (data replies, then one ACK or error, all naming the
/// option); before TLS on a TLS-only server every option but STARTTLS and ABORT is refused `TLS_REQD`; STARTTLS is
/// acknowledged just before the switch and never without TLS; bytes behind an unfinished STARTTLS close the
/// connection; the handshake ends at most once (`close` or `transmit` is its last action, and it takes nothing
/// afterwards); a session honours the TLS mode and what was negotiated; a request's payload arrives whole
/// before the next header; an accepted request lies inside the export, aligned, within the advertised maximum
/// and allowed by the export's flags (a WRITE's payload is exactly its length); every request gets a reply
/// (error, ok, whole or sparse read, block status) that our client decodes as the complete answer to it.
///
/// Input: a configuration byte (bits 0-1 TLS mode, 2 OPT_LIST refused, 3 extended headers refused, 4 DF, CACHE
/// and FAST_ZERO offered, 5 read-only, 6 at most 8 options, 7 the TLS handshake never finishes), the first
/// export's size (4 bytes) and the second's (8), a chunk size (0: all at once), then the client's byte stream.
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
        if config & 64 != 0 { handshake.maxOptions = 8 }
        let tlsFails = config & 128 != 0
        var awaitingTLS = false
        let chunk = Int(input.byte())
        var stream = input.rest()[...]
        require(handshake.greeting().count == 18, "greeting of \(handshake.greeting().count) bytes")
        while !stream.isEmpty {
            let piece = chunk == 0 ? stream : stream.prefix(chunk)
            stream = stream.dropFirst(piece.count)
            let before = handshake.isTLS
            let actions = handshake.receive(Array(piece))
            if awaitingTLS {
                // The client spoke before the (never finished) TLS handshake: nothing but a close.
                guard actions.count == 1, case .close = actions[0] else {
                    return require(false, "\(actions.count) actions for bytes sent behind STARTTLS")
                }
            }
            for (index, action) in actions.enumerated() {
                let last = index == actions.count - 1
                switch action {
                case .send(let bytes):
                    let next = last ? nil : actions[index + 1]
                    if case .transmit? = next, bytes.count == 10 || bytes.count == 134 {
                        // EXPORT_NAME's answer is size and flags (and 124 zeroes), not an option reply.
                        require(!optionRepliesFramed(bytes, tlsRequired: false), "EXPORT_NAME answered as an option")
                    } else {
                        let refusing = tlsMode == .required && !before
                        require(optionRepliesFramed(bytes, tlsRequired: refusing), "ill-framed option answer")
                    }
                case .startTLS:
                    require(tlsMode != .off && last && !before, "STARTTLS accepted with TLS \(tlsMode)")
                    let ack = NBDOptionReplyHeader.encode(option: NBDOption.startTLS.rawValue, type: .ack, data: [])
                    guard index > 0, case .send(let previous) = actions[index - 1], previous == ack else {
                        return require(false, "STARTTLS without its ACK just before")
                    }
                    if tlsFails {
                        awaitingTLS = true
                    } else {
                        handshake.tlsStarted()
                        require(handshake.isTLS, "TLS not recorded")
                    }
                case .close:
                    require(last, "actions after close")
                    return require(handshake.receive([0, 1, 2]).isEmpty, "the handshake went on after close")
                case .transmit(let session, let leftover):
                    require(last, "actions after transmit")
                    require(handshake.receive([0, 1, 2]).isEmpty, "the handshake went on after transmit")
                    check(session, exports: exports, tlsMode: tlsMode, tls: handshake.isTLS)
                    return transmission(session, Array(leftover) + Array(stream), chunk: chunk)
                }
            }
        }
    }

    /// One option's answer: option replies back to back (magic, option, type, length and that many bytes each),
    /// all for the same option, data replies first and exactly one ACK or error last. `tlsRequired`: the answer
    /// of a TLS-only server before TLS, which only STARTTLS and ABORT escape.
    static func optionRepliesFramed(_ bytes: [UInt8], tlsRequired: Bool) -> Bool {
        var rest = bytes[...]
        var option: UInt32?
        var final = false
        while !rest.isEmpty {
            guard !final,
                let header = try? NBDOptionReplyHeader.decode(Array(rest.prefix(NBDOptionReplyHeader.size))),
                rest.count >= NBDOptionReplyHeader.size + Int(header.length), option ?? header.option == header.option
            else { return false }
            option = header.option
            rest = rest.dropFirst(NBDOptionReplyHeader.size + Int(header.length))
            switch header.type {
            case .ack, .error: final = true
            case .server, .info, .metaContext: break
            case .unknown: return false
            }
            let escapes = header.option == NBDOption.startTLS.rawValue || header.option == NBDOption.abort.rawValue
            if tlsRequired, !escapes, header.type != .error(.tlsRequired), header.type != .error(.tooBig) {
                return false
            }
        }
        return final
    }

    static func check(
        _ session: NBDServerSession, exports: [NBDExportDescription], tlsMode: NBDServerTLSMode, tls: Bool
    ) {
        require(exports.indices.contains(session.exportIndex), "export \(session.exportIndex)")
        require(session.export == exports[session.exportIndex], "session export differs from the list")
        require(!session.extendedHeaders || session.structuredReplies, "extended headers without structured replies")
        require(session.allocationContext == nil || session.structuredReplies, "metadata without structured replies")
        require(
            session.allocationContext == nil || session.allocationContext == NBDServerHandshake.allocationContextID,
            "context id \(session.allocationContext ?? 0)")
        require(session.tls == tls, "session TLS \(session.tls), handshake \(tls)")
        require(tlsMode != .required || session.tls, "transmission without TLS on a TLS-only server")
        require(tlsMode != .off || !session.tls, "TLS on a server without TLS")
        require(session.maxPayload == UInt64(session.export.blockSize.maximum), "maximum payload")
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

    /// Checks one request as the server does, and the reply it would send; false after `DISC`.
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
        let cookie = header.cookie
        switch session.check(header) {
        case .failure(let refusal):
            let bytes = session.errorReply(cookie: cookie, offset: header.offset, refusal)
            let reply = decode([.bytes(bytes)], header, session)
            require(reply.error == refusal.errno, "refusal \(refusal.errno) answered \(reply)")
            return true
        case .success(let operation):
            require(header.command != nil, "unknown command \(header.type) accepted")
            if case .write = operation {} else { require(payload == 0, "payload on an accepted \(operation)") }
            switch operation {
            case .disconnect: return false
            case .flush: require(flags.contains(.sendFlush), "flush not offered")
            case .read(let offset, let length, let dontFragment):
                inside(offset, length, aligned: true)
                require(length <= session.maxPayload, "read of \(length) beyond the maximum")
                require(!dontFragment || flags.contains(.sendDF), "DF not offered")
                readReplies(session, header, offset: offset, length: length, sparse: !dontFragment)
                return true
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
            case .blockStatus(let offset, let length, let one):
                inside(offset, length, aligned: false)
                require(session.allocationContext != nil, "block status without a context")
                // One extent, as for a device without a map (the server's are whole blocks, at least one).
                let limit = session.extendedHeaders ? UInt64.max : UInt64(UInt32.max)
                let extents = [NBDExtent(length: max(1, min(length, limit)), flags: one ? 0 : 3)]
                let bytes = session.blockStatusReply(cookie: cookie, requestOffset: offset, extents: extents)
                let reply = decode([.bytes(bytes)], header, session)
                require(reply.extents == extents && reply.error == nil, "block status answered \(reply)")
                return true
            }
            let reply = decode([.bytes(session.okReply(cookie: cookie, offset: header.offset))], header, session)
            require(reply.error == nil, "ok answered \(reply)")
            return true
        }
    }

    /// NBDServerConnection's READ replies: whole (a simple reply and the data, one `OFFSET_DATA` chunk, or for an
    /// empty read the final chunk alone) and, with structured replies, sparse (a hole, then data, then `NONE`).
    static func readReplies(
        _ session: NBDServerSession, _ header: NBDRequestHeader, offset: UInt64, length: UInt64, sparse: Bool
    ) {
        let cookie = header.cookie
        let whole: [ReplyPart] =
            length == 0 && session.structuredReplies
            ? [.bytes(session.doneReply(cookie: cookie, requestOffset: offset))]
            : [
                .bytes(
                    session.dataReplyHeader(
                        cookie: cookie, requestOffset: offset, dataOffset: offset, length: length, done: true)),
                .data(length),
            ]
        let reply = decode(whole, header, session)
        require(reply.data == length && reply.holes == 0 && reply.error == nil, "read of \(length) answered \(reply)")
        guard sparse, session.structuredReplies, length >= 2 else { return }
        let hole = min(length / 2, UInt64(UInt32.max))
        let sparse: [ReplyPart] = [
            .bytes(
                session.holeReply(
                    cookie: cookie, requestOffset: offset, holeOffset: offset, length: UInt32(hole), done: false)),
            .bytes(
                session.dataReplyHeader(
                    cookie: cookie, requestOffset: offset, dataOffset: offset + hole, length: length - hole,
                    done: false)),
            .data(length - hole),
            .bytes(session.doneReply(cookie: cookie, requestOffset: offset)),
        ]
        let pieces = decode(sparse, header, session)
        require(pieces.holes == hole && pieces.data == length - hole, "sparse read of \(length) answered \(pieces)")
    }

    /// A piece of a reply: bytes the server encodes, or a run of read data (skipped, as the direct data path
    /// of our client reads it straight into its pages).
    enum ReplyPart {
        case bytes([UInt8])
        case data(UInt64)
    }

    /// What our client made of one reply.
    struct ReplySummary: CustomStringConvertible {
        var error: NBDErrno?
        var data: UInt64 = 0
        var holes: UInt64 = 0
        var extents: [NBDExtent]?

        var description: String {
            "error \(String(describing: error)), \(data) data bytes, \(holes) hole bytes, extents \(extents ?? [])"
        }
    }

    /// The reply, through our client's decoder (`NBDReplyDecoder`), must be the complete answer to `header`:
    /// nothing for another cookie, nothing outside the request, `done` at its end and the decoder idle after it.
    static func decode(_ parts: [ReplyPart], _ header: NBDRequestHeader, _ session: NBDServerSession) -> ReplySummary {
        let info = NBDRequestInfo(
            command: header.command ?? .flush, offset: header.offset, length: min(header.length, ~header.offset))
        var decoder = NBDReplyDecoder(
            structuredReplies: session.structuredReplies, extendedHeaders: session.extendedHeaders)
        var summary = ReplySummary()
        var done = false
        func drain(_ bytes: [UInt8]) {
            bytes.withUnsafeBytes { raw in
                var window = raw
                while true {
                    let event: NBDReplyEvent?
                    do {
                        event = try decoder.next(&window) { $0 == header.cookie ? info : nil }
                    } catch {
                        return require(false, "our client cannot decode the reply to \(header): \(error)")
                    }
                    guard let event else { break }
                    require(!done, "reply events after done: \(event)")
                    switch event {
                    case .error(let cookie, let errno, _, _):
                        require(cookie == header.cookie && summary.error == nil, "error for \(cookie)")
                        summary.error = errno
                    case .done(let cookie):
                        require(cookie == header.cookie, "done for \(cookie)")
                        done = true
                    case .hole(let cookie, let offset, let length):
                        require(cookie == header.cookie, "hole for \(cookie)")
                        require(offset == info.offset + summary.data + summary.holes, "hole at \(offset)")
                        summary.holes += length
                    case .blockStatus(let cookie, let contextID, let extents):
                        require(cookie == header.cookie && summary.extents == nil, "block status for \(cookie)")
                        require(contextID == session.allocationContext, "block status for context \(contextID)")
                        summary.extents = extents
                    case .data(let cookie, _, let bytes):
                        require(false, "\(bytes.count) data bytes for \(cookie) not read directly")
                    }
                }
            }
        }
        for part in parts {
            switch part {
            case .bytes(let bytes):
                drain(bytes)
            case .data(let count):
                guard count > 0 else { continue }
                guard let pending = decoder.pendingData else {
                    require(false, "\(count) data bytes the reply did not announce")
                    return summary
                }
                require(pending.cookie == header.cookie && pending.remaining == count, "data run \(pending)")
                require(pending.offset == info.offset + summary.data + summary.holes, "data at \(pending.offset)")
                decoder.skipData(count)
                summary.data += count
            }
        }
        drain([])
        require(done && decoder.isIdle, "reply to \(header) did not end: \(summary)")
        return summary
    }
}
