import NBDProtocol
import Testing

/// The server's request checks and replies, pure (NBDProtocol alone, no socket, no device): each refusal with
/// the errno the spec names, each accepted request as the operation the server runs.
@Suite("NBDServer session request checks")
struct NBDServerSessionTests {
    static let writable = NBDExportDescription(
        name: "disk", info: NBDExportInfo(size: 1 << 20, flags: [.hasFlags, .sendFlush, .sendFUA, .sendTrim]),
        blockSize: NBDBlockSize(minimum: 512, preferred: 4096, maximum: 64 << 10))
    static let readOnly = NBDExportDescription(
        name: "ro", info: NBDExportInfo(size: 4096, flags: [.hasFlags, .readOnly, .sendDF]),
        blockSize: NBDBlockSize(minimum: 1, preferred: 4096, maximum: 64 << 10))

    private func session(
        _ export: NBDExportDescription = writable, structured: Bool = false, extended: Bool = false,
        context: UInt32? = nil
    ) -> NBDServerSession {
        NBDServerSession(
            exportIndex: 0, export: export, structuredReplies: structured || extended, extendedHeaders: extended,
            allocationContext: context, tls: false)
    }

    private func header(
        _ command: NBDCommand, _ flags: NBDCommandFlags = [], offset: UInt64 = 0, length: UInt64 = 512
    ) -> NBDRequestHeader {
        NBDRequestHeader(flags: flags, type: command.rawValue, cookie: 7, offset: offset, length: length)
    }

    private func errno(_ result: Result<NBDServerOperation, NBDServerRefusal>) -> NBDErrno? {
        if case .failure(let refusal) = result { return refusal.errno }
        return nil
    }

    @Test func acceptedRequestsBecomeOperations() {
        let plain = session()
        #expect(
            plain.check(header(.read, length: 4096)) == .success(.read(offset: 0, length: 4096, dontFragment: false)))
        #expect(plain.check(header(.write, .fua, offset: 512)) == .success(.write(offset: 512, length: 512, fua: true)))
        #expect(plain.check(header(.flush, length: 0)) == .success(.flush))
        #expect(plain.check(header(.trim)) == .success(.trim(offset: 0, length: 512, fua: false)))
        #expect(plain.check(header(.disconnect, length: 0)) == .success(.disconnect))
        #expect(
            session(structured: true, context: 1).check(header(.blockStatus, .reqOne, offset: 512, length: 3))
                == .success(.blockStatus(offset: 512, length: 3, one: true)))
        #expect(
            session(Self.readOnly, structured: true).check(header(.read, .dontFragment, offset: 1, length: 3))
                == .success(.read(offset: 1, length: 3, dontFragment: true)))
    }

    @Test func refusalsCarryTheSpecsErrno() {
        let plain = session()
        #expect(errno(plain.check(NBDRequestHeader(type: 99, cookie: 1, offset: 0, length: 0))) == .einval)
        #expect(errno(plain.check(header(.read, offset: 1 << 20))) == .einval)  // beyond the end
        #expect(errno(plain.check(header(.write, offset: 1 << 20))) == .enospc)
        #expect(errno(plain.check(header(.trim, offset: 1 << 20))) == .einval)
        #expect(errno(plain.check(header(.read, offset: .max - 100, length: 512))) == .einval)  // wraps
        #expect(errno(plain.check(header(.read, offset: 1))) == .einval)  // unaligned
        #expect(errno(plain.check(header(.read, length: 128 << 10))) == .eoverflow)
        #expect(errno(plain.check(header(.read, .dontFragment))) == .einval)  // DF needs structured + sendDF
        #expect(errno(plain.check(header(.writeZeroes))) == .einval)  // not offered
        #expect(errno(plain.check(header(.cache))) == .einval)
        #expect(errno(plain.check(header(.blockStatus))) == .einval)  // no context negotiated
        #expect(errno(session(Self.readOnly).check(header(.write, length: 1))) == .eperm)
        #expect(errno(session(Self.readOnly).check(header(.flush, length: 0))) == .einval)
        // Extended headers: a WRITE says its payload length, nothing else carries one.
        let extended = session(extended: true)
        #expect(errno(extended.check(header(.write))) == .einval)
        #expect(extended.check(header(.write, .payloadLength)) == .success(.write(offset: 0, length: 512, fua: false)))
        #expect(errno(extended.check(header(.read, .payloadLength))) == .einval)
    }

    @Test func refusalRepliesAreSimpleOrErrorChunks() {
        let refusal = NBDServerRefusal(.eperm, "no")
        #expect(
            session().errorReply(cookie: 7, offset: 0, refusal)
                == [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7])
        // Structured: magic, flags DONE, type ERROR (32769), cookie, length 8, errno, message length, message.
        #expect(
            session(structured: true).errorReply(cookie: 7, offset: 0, refusal)
                == [0x66, 0x8e, 0x33, 0xef, 0, 1, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 8]
                + [0, 0, 0, 1, 0, 2] + Array("no".utf8))
    }
}
