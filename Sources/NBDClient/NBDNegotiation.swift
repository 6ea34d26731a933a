public import NBDProtocol

/// What the client asks for during the handshake.
///
/// OCaml: none (ocaml-nbd negotiates a fixed minimum)
public struct NBDNegotiationOptions: Sendable, Equatable {
    /// Run `STARTTLS` first and fail rather than continue in plaintext.
    public var tls: NBDTLSOptions?
    /// Ask for structured replies (sparse reads, error chunks, block status).
    public var structuredReplies: Bool
    /// Ask for extended (64-bit) headers.
    public var extendedHeaders: Bool
    /// Metadata contexts to select (`base:allocation` by default).
    public var metaContexts: [String]

    /// Memberwise initializer.
    public init(
        tls: NBDTLSOptions? = nil, structuredReplies: Bool = true, extendedHeaders: Bool = true,
        metaContexts: [String] = ["base:allocation"]
    ) {
        self.tls = tls
        self.structuredReplies = structuredReplies
        self.extendedHeaders = extendedHeaders
        self.metaContexts = metaContexts
    }
}

/// What the handshake settled: the export and how to talk to it.
///
/// OCaml: `Nbd.Protocol.DiskInfo` (+ what ocaml-nbd does not negotiate)
public struct NBDSession: Sendable, Equatable {
    /// The export name used.
    public var export: String
    /// Size in bytes and transmission flags.
    public var info: NBDExportInfo
    /// Size constraints (the spec's defaults when the server sent none).
    public var blockSize: NBDBlockSize
    /// `NBD_INFO_DESCRIPTION`, if sent.
    public var description: String?
    /// Structured replies in use.
    public var structuredReplies: Bool
    /// Extended headers in use.
    public var extendedHeaders: Bool
    /// Selected metadata contexts by name.
    public var metaContexts: [String: UInt32]
    /// True if the server ran the (legacy) oldstyle handshake or only EXPORT_NAME worked.
    public var usedExportName: Bool
    /// TLS in use.
    public var tls: Bool
}

/// The handshake steps, over an ``NBDChannel``.
enum NBDNegotiator {
    /// Reads the greeting and sends client flags; returns the server's flags, or nil for oldstyle (whose
    /// export info is returned instead). Runs STARTTLS when asked.
    static func greet(_ channel: NBDChannel, tls: NBDTLSOptions?) async throws(NBDError)
        -> (flags: NBDHandshakeFlags, oldstyle: NBDExportInfo?)
    {
        let first = try await channel.receive(16)
        let greeting = try decoding { () throws(NBDProtocolError) in try NBDGreeting.decode(first) }
        if greeting == .oldstyle {
            guard tls == nil else { throw .tlsUnavailable("the server speaks the oldstyle handshake") }
            let rest = try await channel.receive(136)
            var reader = NBDReader(rest, what: "oldstyle handshake")
            do {
                let size = try reader.uint64()
                let flags = try reader.uint32()
                return (
                    [],
                    NBDExportInfo(size: size, flags: NBDTransmissionFlags(rawValue: UInt16(truncatingIfNeeded: flags)))
                )
            } catch { throw .protocolError(error) }
        }
        var reader = NBDReader(try await channel.receive(2), what: "handshake flags")
        let flags: NBDHandshakeFlags
        do { flags = NBDHandshakeFlags(rawValue: try reader.uint16()) } catch { throw .protocolError(error) }
        var client: NBDClientFlags = []
        if flags.contains(.fixedNewstyle) { client.insert(.fixedNewstyle) }
        if flags.contains(.noZeroes) { client.insert(.noZeroes) }
        var writer = NBDWriter()
        writer.put(client.rawValue)
        try await channel.send(writer.bytes)
        if let tls {
            guard flags.contains(.fixedNewstyle) else {
                throw .tlsUnavailable("the server lacks fixed newstyle, so it cannot STARTTLS")
            }
            let replies = try await option(channel, .startTLS)
            guard case .ack = replies.last?.type else {
                if case .error(let error)? = replies.last?.type { throw .tlsUnavailable("STARTTLS: \(error)") }
                throw .tlsUnavailable("STARTTLS not acknowledged")
            }
            try await channel.startTLS(tls)
        }
        return (flags, nil)
    }

    /// Sends an option and collects its replies up to the final one (ACK or error).
    static func option(_ channel: NBDChannel, _ option: NBDOption, data: [UInt8] = []) async throws(NBDError)
        -> [(type: NBDOptionReplyType, data: [UInt8])]
    {
        try await channel.send(NBDOptionRequest.encode(option, data: data))
        var replies: [(type: NBDOptionReplyType, data: [UInt8])] = []
        while true {
            let bytes = try await channel.receive(NBDOptionReplyHeader.size)
            let header = try decoding { () throws(NBDProtocolError) in try NBDOptionReplyHeader.decode(bytes) }
            guard header.option == option.rawValue else {
                throw .protocolError(.unexpected("reply to option \(header.option) while waiting for \(option)"))
            }
            let data = header.length == 0 ? [] : try await channel.receive(Int(header.length))
            replies.append((header.type, data))
            switch header.type {
            case .ack, .error: return replies
            case .unknown(let raw): throw .protocolError(.unexpected("option reply type \(raw)"))
            case .server, .info, .metaContext:
                guard replies.count < 100_000 else {
                    throw .protocolError(.oversize(what: "option replies", length: 100_000, limit: 100_000))
                }
            }
        }
    }

    /// Runs the whole handshake for `export` and switches the channel to transmission.
    static func negotiate(_ channel: NBDChannel, export: String, options: NBDNegotiationOptions) async throws(NBDError)
        -> NBDSession
    {
        let (flags, oldstyle) = try await greet(channel, tls: options.tls)
        var session = NBDSession(
            export: export, info: NBDExportInfo(size: 0, flags: []), blockSize: .default, description: nil,
            structuredReplies: false, extendedHeaders: false, metaContexts: [:], usedExportName: true,
            tls: options.tls != nil)
        if let oldstyle {
            session.info = oldstyle
            try await channel.startTransmission(structured: false, extended: false, tls: false)
            return session
        }
        if flags.contains(.fixedNewstyle) {
            if options.extendedHeaders, case .ack? = try await option(channel, .extendedHeaders).last?.type {
                session.extendedHeaders = true
                session.structuredReplies = true
            } else if options.structuredReplies || options.extendedHeaders,
                case .ack? = try await option(channel, .structuredReply).last?.type
            {
                session.structuredReplies = true
            }
            if session.structuredReplies, !options.metaContexts.isEmpty {
                let data = NBDOptionRequest.metaContextData(export: export, queries: options.metaContexts)
                for reply in try await option(channel, .setMetaContext, data: data) {
                    guard case .metaContext = reply.type else { continue }
                    do {
                        let (id, name) = try NBDOptionReplyData.metaContext(reply.data)
                        session.metaContexts[name] = id
                    } catch { throw .protocolError(error) }
                }
            }
            if try await go(channel, export: export, into: &session) {
                try await channel.startTransmission(
                    structured: session.structuredReplies, extended: session.extendedHeaders, tls: session.tls)
                return session
            }
        }
        // EXPORT_NAME: the only way for plain newstyle servers, the fallback when GO is refused.
        session.usedExportName = true
        session.structuredReplies = session.structuredReplies && flags.contains(.fixedNewstyle)
        try await channel.send(NBDOptionRequest.encode(.exportName, data: Array(export.utf8)))
        let reply = try await channel.receive(flags.contains(.noZeroes) ? 10 : 134)
        do { session.info = try NBDOptionReplyData.exportName(reply) } catch { throw .protocolError(error) }
        try await channel.startTransmission(
            structured: session.structuredReplies, extended: session.extendedHeaders, tls: session.tls)
        return session
    }

    /// `OPT_GO` asking for the block size. True on success; false when the server lacks GO or refuses it
    /// by policy (the caller falls back to EXPORT_NAME); throws for any other refusal.
    private static func go(_ channel: NBDChannel, export: String, into session: inout NBDSession) async throws(NBDError)
        -> Bool
    {
        let data = NBDOptionRequest.goData(export: export, requests: [.blockSize, .description])
        let replies = try await option(channel, .go, data: data)
        var sawExport = false
        for reply in replies {
            switch reply.type {
            case .info:
                let info: NBDInfo
                do { info = try NBDInfo.decode(reply.data) } catch { throw .protocolError(error) }
                switch info {
                case .export(let value):
                    session.info = value
                    sawExport = true
                case .blockSize(let value):
                    guard value.isValid else {
                        throw .protocolError(
                            .unexpected("block size \(value.minimum)/\(value.preferred)/\(value.maximum)"))
                    }
                    session.blockSize = value
                case .description(let text): session.description = text
                case .name, .unknown: break
                }
            case .error(.unsupported), .error(.policy):
                return false
            case .error(let error):
                throw .optionRejected(option: .go, error)
            default: break
            }
        }
        guard sawExport else { throw .protocolError(.unexpected("OPT_GO acknowledged without NBD_INFO_EXPORT")) }
        session.usedExportName = false
        return true
    }

    /// `OPT_LIST`, then `OPT_ABORT` (the server may answer or just close; either is fine). The caller
    /// closes the channel whatever happens.
    static func list(_ channel: NBDChannel, tls: NBDTLSOptions?) async throws(NBDError)
        -> Result<[(name: String, description: String)], NBDListError>
    {
        let (flags, oldstyle) = try await greet(channel, tls: tls)
        guard oldstyle == nil, flags.contains(.fixedNewstyle) else { return .failure(.unsupported(nil)) }
        let replies = try await option(channel, .list)
        var names: [(name: String, description: String)] = []
        for reply in replies {
            switch reply.type {
            case .server:
                do { names.append(try NBDOptionReplyData.server(reply.data)) } catch { throw .protocolError(error) }
            case .error(.policy): return .failure(.policy)
            case .error(.tlsRequired): return .failure(.tlsRequired)
            case .error(let error): return .failure(.unsupported(error))
            default: break
            }
        }
        try? await channel.send(NBDOptionRequest.encode(.abort))
        return .success(names)
    }
}

/// Runs a decoder, turning its protocol error into an ``NBDError``.
func decoding<T>(_ body: () throws(NBDProtocolError) -> T) throws(NBDError) -> T {
    do { return try body() } catch { throw .protocolError(error) }
}
