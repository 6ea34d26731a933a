import NBDProtocol
import Testing

/// The pure server handshake, fed scripted client bytes (whole and byte by byte); replies checked byte
/// for byte.
@Suite("NBDServer handshake state machine")
struct NBDServerHandshakeTests {
    static let disk = NBDExportDescription(
        name: "disk", description: "a disk",
        info: NBDExportInfo(size: 1 << 20, flags: [.hasFlags, .sendFlush, .sendFUA]),
        blockSize: NBDBlockSize(minimum: 512, preferred: 4096, maximum: 32 << 20))
    static let other = NBDExportDescription(
        name: "other", info: NBDExportInfo(size: 4096, flags: [.hasFlags, .readOnly]),
        blockSize: NBDBlockSize(minimum: 1, preferred: 4096, maximum: 32 << 20))

    private func option(_ option: NBDOption, _ data: [UInt8] = []) -> [UInt8] {
        NBDOptionRequest.encode(option, data: data)
    }
    private func reply(_ option: NBDOption, _ type: NBDOptionReplyType, _ data: [UInt8] = []) -> [UInt8] {
        NBDOptionReplyHeader.encode(option: option.rawValue, type: type, data: data)
    }
    private let flags: [UInt8] = [0, 0, 0, 3]

    /// Runs `input` through a fresh handshake whole and byte by byte; both runs must act the same.
    private func run(
        _ input: [UInt8], tls: NBDServerTLSMode = .off, configure: (inout NBDServerHandshake) -> Void = { _ in }
    ) -> [NBDServerHandshake.Action] {
        var results: [[NBDServerHandshake.Action]] = []
        for size in [input.count, 1] {
            var machine = NBDServerHandshake(exports: [Self.disk, Self.other], tlsMode: tls)
            configure(&machine)
            var actions: [NBDServerHandshake.Action] = []
            for start in stride(from: 0, to: input.count, by: max(size, 1)) {
                let piece = Array(input[start..<min(input.count, start + size)])
                if case .transmit(let session, let leftover)? = actions.last {
                    // Past the handshake the I/O layer reads transmission bytes itself.
                    actions[actions.count - 1] = .transmit(session, leftover: leftover + piece)
                    continue
                }
                actions += machine.receive(piece)
            }
            // Sends split across feeds are joined, so both runs compare equal.
            var joined: [NBDServerHandshake.Action] = []
            for action in actions {
                if case .send(let more) = action, case .send(let bytes)? = joined.last {
                    joined[joined.count - 1] = .send(bytes + more)
                } else {
                    joined.append(action)
                }
            }
            results.append(joined)
        }
        #expect(results[0] == results[1])
        return results[0]
    }

    @Test func greetingIsFixedNewstyleWithNoZeroes() {
        let machine = NBDServerHandshake(exports: [Self.disk])
        #expect(machine.greeting() == Array("NBDMAGICIHAVEOPT".utf8) + [0, 3])
    }

    @Test func goRepliesWithInfoAndEntersTransmission() throws {
        let go = option(.go, NBDOptionRequest.goData(export: "disk", requests: [.name, .description, .blockSize]))
        let actions = run(flags + go + [0x25, 0x60])
        let expected =
            reply(.go, .info, NBDInfo.export(Self.disk.info).encode())
            + reply(.go, .info, NBDInfo.name("disk").encode())
            + reply(.go, .info, NBDInfo.description("a disk").encode())
            + reply(.go, .info, NBDInfo.blockSize(Self.disk.blockSize).encode()) + reply(.go, .ack)
        let session = NBDServerSession(
            exportIndex: 0, export: Self.disk, structuredReplies: false, extendedHeaders: false, allocationContext: nil,
            tls: false)
        #expect(actions == [.send(expected), .transmit(session, leftover: [0x25, 0x60])])
        // INFO answers the same and stays in the handshake; an unknown export is refused.
        let info = option(.info, NBDOptionRequest.goData(export: "", requests: []))
        let unknown = option(.go, NBDOptionRequest.goData(export: "nope", requests: []))
        let more = run(flags + info + unknown)
        let first =
            reply(.info, .info, NBDInfo.export(Self.disk.info).encode())
            + reply(.info, .info, NBDInfo.blockSize(Self.disk.blockSize).encode()) + reply(.info, .ack)
        #expect(more == [.send(first + reply(.go, .error(.unknownExport)))])
        #expect(run(flags + option(.go, [0, 0, 0, 9])) == [.send(reply(.go, .error(.invalid)))])
    }

    @Test func exportNameWithAndWithoutZeroes() {
        let name = option(.exportName, Array("other".utf8))
        let withZeroes = run([0, 0, 0, 1] + name)
        guard case .send(let bytes)? = withZeroes.first, case .transmit(let session, _)? = withZeroes.last else {
            Issue.record("no export")
            return
        }
        #expect(bytes == NBDOptionReplyData.encodeExportName(Self.other.info, zeroes: true) && bytes.count == 134)
        #expect(session.exportIndex == 1)
        #expect(run(flags + name).first == .send(NBDOptionReplyData.encodeExportName(Self.other.info, zeroes: false)))
        // An unknown name cannot be answered with an error: the connection closes.
        #expect(run(flags + option(.exportName, Array("x".utf8))) == [.close("EXPORT_NAME for an unknown export")])
        // A plain newstyle client may send only EXPORT_NAME.
        guard case .close? = run([0, 0, 0, 0] + option(.list)).last else {
            Issue.record("a non-fixed client's LIST was answered")
            return
        }
    }

    @Test func listAbortAndUnknownOptions() {
        let listed =
            reply(.list, .server, NBDOptionReplyData.encodeServer(name: "disk", description: "a disk"))
            + reply(.list, .server, NBDOptionReplyData.encodeServer(name: "other")) + reply(.list, .ack)
        let unknown = NBDOptionRequestHeader(option: 99, length: 2).encode() + [1, 2]
        let actions = run(flags + option(.list) + unknown + option(.peekExport) + option(.abort))
        #expect(
            actions == [
                .send(
                    listed + NBDOptionReplyHeader.encode(option: 99, type: .error(.unsupported))
                        + reply(.peekExport, .error(.unsupported)) + reply(.abort, .ack)),
                .close("the client aborted the handshake"),
            ])
        #expect(run(flags + option(.list)) { $0.allowList = false } == [.send(reply(.list, .error(.policy)))])
        #expect(run(flags + option(.list, [1])) == [.send(reply(.list, .error(.invalid)))])
    }

    @Test func hostileOptionsAreBounded() {
        // Option data over the limit is skipped unread and refused; the next option is still answered.
        let big =
            NBDOptionRequestHeader(option: NBDOption.go.rawValue, length: 70_000).encode()
            + [UInt8](repeating: 7, count: 70_000)
        #expect(
            run(flags + big + option(.list)) { $0.allowList = false } == [
                .send(reply(.go, .error(.tooBig)) + reply(.list, .error(.policy)))
            ])
        // Too many options, unknown client flags, a bad magic: the connection closes.
        let many = (0..<5).flatMap { _ in option(.structuredReply) }
        #expect(run(flags + many) { $0.maxOptions = 4 }.last == .close("too many options"))
        #expect(run([0, 0, 0, 8]) == [.close("unknown client flags 0x8")])
        guard case .close? = run(flags + Array("IHAVEOPX".utf8) + [0, 0, 0, 1, 0, 0, 0, 0]).last else {
            Issue.record("bad option magic accepted")
            return
        }
    }

    @Test func structuredExtendedAndMetaContexts() {
        let set = option(
            .setMetaContext, NBDOptionRequest.metaContextData(export: "disk", queries: ["base:allocation"]))
        let go = option(.go, NBDOptionRequest.goData(export: "disk", requests: []))
        // SET before structured replies is invalid; after, it selects base:allocation for GO on that export.
        let actions = run(flags + set + option(.structuredReply) + set + go)
        let context = reply(
            .setMetaContext, .metaContext, NBDOptionReplyData.encodeMetaContext(id: 1, name: "base:allocation"))
        guard case .send(let bytes)? = actions.first, case .transmit(let session, _)? = actions.last else {
            Issue.record("no session")
            return
        }
        #expect(
            bytes.starts(
                with: reply(.setMetaContext, .error(.invalid)) + reply(.structuredReply, .ack) + context
                    + reply(.setMetaContext, .ack)))
        #expect(session.structuredReplies && !session.extendedHeaders && session.allocationContext == 1)
        // Contexts chosen for another export name do not carry over.
        let otherGo = option(.go, NBDOptionRequest.goData(export: "other", requests: []))
        guard case .transmit(let other, _)? = run(flags + option(.structuredReply) + set + otherGo).last else {
            Issue.record("no session")
            return
        }
        #expect(other.allocationContext == nil)
        // LIST_META_CONTEXT with no query lists base:allocation with id 0.
        let list = option(.listMetaContext, NBDOptionRequest.metaContextData(export: "", queries: []))
        #expect(
            run(flags + list) == [
                .send(
                    reply(
                        .listMetaContext, .metaContext,
                        NBDOptionReplyData.encodeMetaContext(id: 0, name: "base:allocation"))
                        + reply(.listMetaContext, .ack))
            ])
        // Extended headers imply structured replies; structured after extended, and EXPORT_NAME after it, are refused.
        let extended = run(flags + option(.extendedHeaders) + option(.structuredReply) + go)
        guard case .transmit(let wide, _)? = extended.last else {
            Issue.record("no session")
            return
        }
        #expect(wide.extendedHeaders && wide.structuredReplies)
        guard case .send(let replies)? = extended.first else { return }
        #expect(
            replies.starts(
                with: reply(.extendedHeaders, .ack) + reply(.structuredReply, .error(.extendedHeadersRequired))))
        #expect(
            run(flags + option(.extendedHeaders) + option(.exportName)).last
                == .close("EXPORT_NAME after extended headers"))
        #expect(
            run(flags + option(.extendedHeaders)) { $0.allowExtendedHeaders = false } == [
                .send(reply(.extendedHeaders, .error(.unsupported)))
            ])
    }

    @Test func tlsRequiredRefusesEverythingElse() {
        let go = option(.go, NBDOptionRequest.goData(export: "", requests: []))
        #expect(
            run(flags + option(.list) + go + option(.structuredReply), tls: .required) == [
                .send(
                    reply(.list, .error(.tlsRequired)) + reply(.go, .error(.tlsRequired))
                        + reply(.structuredReply, .error(.tlsRequired)))
            ])
        #expect(
            run(flags + option(.exportName), tls: .required) == [.close("EXPORT_NAME before TLS on a TLS-only server")])
        #expect(
            run([0, 0, 0, 0], tls: .required).last == .close("TLS is required and the client lacks fixed newstyle"))
        #expect(run(flags + option(.startTLS), tls: .required) == [.send(reply(.startTLS, .ack)), .startTLS])
        // Plaintext queued behind STARTTLS would be taken as sent under TLS: the connection closes instead.
        var injected = NBDServerHandshake(exports: [Self.disk], tlsMode: .required)
        #expect(
            injected.receive(flags + option(.startTLS) + option(.structuredReply)) == [
                .send(reply(.startTLS, .ack)), .close("data sent after STARTTLS before the TLS handshake"),
            ])
        // The same bytes arriving after the ACK but before TLS is up are refused too.
        var late = NBDServerHandshake(exports: [Self.disk], tlsMode: .required)
        #expect(late.receive(flags + option(.startTLS)).last == .startTLS)
        #expect(late.receive([0x49]) == [.close("data sent after STARTTLS before the TLS handshake")])
        // Once TLS runs, options work, a second STARTTLS is invalid, and the session says TLS.
        var machine = NBDServerHandshake(exports: [Self.disk], tlsMode: .required)
        #expect(machine.receive(flags + option(.startTLS)) == [.send(reply(.startTLS, .ack)), .startTLS])
        machine.tlsStarted()
        let actions = machine.receive(option(.startTLS) + go)
        guard case .send(let bytes)? = actions.first, case .transmit(let session, _)? = actions.last else {
            Issue.record("no session under TLS")
            return
        }
        #expect(bytes.starts(with: reply(.startTLS, .error(.invalid))))
        #expect(session.tls)
        // Without TLS configured, STARTTLS is unsupported.
        #expect(run(flags + option(.startTLS)) == [.send(reply(.startTLS, .error(.unsupported)))])
    }
}
