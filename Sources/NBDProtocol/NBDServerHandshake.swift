// The server's side of the handshake as a pure state machine (fed bytes, answering with bytes and actions),
// and what it settles: the export and the session transmission runs with. No I/O: NBDServer drives it from a
// socket, the tests with golden bytes, the nbd-server-request fuzz target with a hostile client's bytes.

/// What the handshake knows about one export: everything it answers options with.
///
/// OCaml: none (ocaml-nbd's server takes only a list of names, `?offer`)
public struct NBDExportDescription: Sendable, Equatable {
    /// The export name clients ask for.
    public var name: String
    /// `NBD_INFO_DESCRIPTION` and the `NBD_REP_SERVER` description ("" for none).
    public var description: String
    /// Size in bytes and transmission flags.
    public var info: NBDExportInfo
    /// Size constraints, sent as `NBD_INFO_BLOCK_SIZE`.
    public var blockSize: NBDBlockSize

    /// Memberwise initializer.
    public init(name: String, description: String = "", info: NBDExportInfo, blockSize: NBDBlockSize) {
        self.name = name
        self.description = description
        self.info = info
        self.blockSize = blockSize
    }
}

/// How a server treats TLS (the spec's NOTLS, SELECTIVETLS with no TLS-only export, FORCEDTLS).
///
/// OCaml: none (ocaml-nbd's server is NOTLS, or FORCEDTLS when its channel can make a TLS channel)
public enum NBDServerTLSMode: Sendable, Equatable {
    /// No TLS: `STARTTLS` is answered `NBD_REP_ERR_UNSUP`.
    case off
    /// TLS at the client's choice.
    case optional
    /// TLS before anything else: every other option is refused with `NBD_REP_ERR_TLS_REQD` (and
    /// `EXPORT_NAME` closes the connection).
    case required
}

/// What the handshake settled: the export and how transmission runs.
///
/// OCaml: none (ocaml-nbd's server returns only the export name)
public struct NBDServerSession: Sendable, Equatable {
    /// Index of the export in the handshake's list.
    public var exportIndex: Int
    /// The export.
    public var export: NBDExportDescription
    /// Structured replies in use.
    public var structuredReplies: Bool
    /// Extended headers in use (structured replies too).
    public var extendedHeaders: Bool
    /// The context id of `base:allocation`, when the client selected it for this export.
    public var allocationContext: UInt32?
    /// TLS in use.
    public var tls: Bool

    /// Memberwise initializer.
    public init(
        exportIndex: Int, export: NBDExportDescription, structuredReplies: Bool, extendedHeaders: Bool,
        allocationContext: UInt32?, tls: Bool
    ) {
        self.exportIndex = exportIndex
        self.export = export
        self.structuredReplies = structuredReplies
        self.extendedHeaders = extendedHeaders
        self.allocationContext = allocationContext
        self.tls = tls
    }
}

/// The server's side of the handshake as a pure state machine: feed it the client's bytes, send what it
/// returns. Nothing here does I/O, so every reply is checked with golden bytes.
///
/// Hostile clients: option data larger than `maxOptionLength` is skipped without being buffered and
/// answered `NBD_REP_ERR_TOO_BIG`; more than `maxOptions` options, unknown client flags, a bad magic, or
/// bytes sent behind `STARTTLS` before the TLS handshake end the connection.
///
/// OCaml: `Nbd.Server.connect` (option haggling, `?offer`, FORCEDTLS)
public struct NBDServerHandshake: Sendable {
    /// What to do after feeding bytes.
    ///
    /// OCaml: none (ocaml-nbd writes and reads its channel directly)
    public enum Action: Sendable, Equatable {
        /// Send these bytes.
        case send([UInt8])
        /// Start the TLS handshake now (after sending what came before); nothing else was buffered.
        case startTLS
        /// Close the connection (a soft `ABORT`, or a hard disconnect for the reason given).
        case close(String)
        /// The handshake is over: serve `session`; `leftover` are transmission bytes already received.
        case transmit(NBDServerSession, leftover: [UInt8])
    }

    /// The exports, the first being the default (the one an empty name selects when none is named "").
    public let exports: [NBDExportDescription]
    /// TLS mode.
    public let tlsMode: NBDServerTLSMode
    /// Whether `OPT_LIST` is answered (else `NBD_REP_ERR_POLICY`).
    public var allowList = true
    /// Whether `OPT_EXTENDED_HEADERS` is accepted (else `NBD_REP_ERR_UNSUP`).
    public var allowExtendedHeaders = true
    /// Largest option data read; larger data is skipped and refused.
    public var maxOptionLength = 64 << 10
    /// Options accepted on one connection before it is closed.
    public var maxOptions = 4096

    /// The context id given to `base:allocation` by `SET_META_CONTEXT`.
    public static let allocationContextID: UInt32 = 1

    private enum Phase: Sendable {
        case clientFlags
        case optionHeader
        case optionData(NBDOptionRequestHeader)
        case discarding(option: UInt32, remaining: UInt32)
        /// `STARTTLS` was acknowledged: nothing may arrive until the I/O layer reports TLS running.
        case awaitingTLS
        case done
    }

    private var phase = Phase.clientFlags
    private var buffer: [UInt8] = []
    private var noZeroes = false
    private var fixed = false
    private var tlsActive = false
    private var structured = false
    private var extended = false
    /// The export `SET_META_CONTEXT` last named, and whether it selected `base:allocation`.
    private var metaContext: (export: String, allocation: Bool)?
    private var options = 0

    /// A handshake offering `exports`.
    ///
    /// OCaml: `Nbd.Server.connect ?offer`
    public init(exports: [NBDExportDescription], tlsMode: NBDServerTLSMode = .off) {
        self.exports = exports
        self.tlsMode = tlsMode
    }

    /// The greeting to send first: fixed newstyle with `NO_ZEROES`.
    ///
    /// OCaml: `Nbd.Server.connect` (its first writes)
    public func greeting() -> [UInt8] { NBDGreeting.encodeNewstyle(flags: [.fixedNewstyle, .noZeroes]) }

    /// True once TLS runs (after ``Action/startTLS`` the caller reports success with ``tlsStarted()``).
    public var isTLS: Bool { tlsActive }

    /// The I/O layer finished the TLS handshake that ``Action/startTLS`` asked for.
    ///
    /// OCaml: `Nbd.Server.connect` (`make_tls_channel`)
    public mutating func tlsStarted() {
        tlsActive = true
        if case .awaitingTLS = phase { phase = .optionHeader }
    }

    /// Consumes client bytes and returns what to do, in order. After ``Action/close(_:)`` or
    /// ``Action/transmit(_:leftover:)`` the handshake takes nothing more.
    ///
    /// OCaml: `Nbd.Server.connect` (the option loop)
    public mutating func receive(_ bytes: [UInt8]) -> [Action] {
        buffer.append(contentsOf: bytes)
        var actions: [Action] = []
        var position = 0
        defer { buffer.removeFirst(min(position, buffer.count)) }
        while true {
            switch phase {
            case .done:
                return actions
            case .awaitingTLS:
                guard buffer.count > position else { return actions }
                return finish(actions + [.close("data sent after STARTTLS before the TLS handshake")])
            case .clientFlags:
                guard buffer.count - position >= 4 else { return actions }
                guard let flags = try? NBDClientFlags.decode(Array(buffer[position..<position + 4])) else {
                    return actions
                }
                position += 4
                guard flags.isSubset(of: [.fixedNewstyle, .noZeroes]) else {
                    return finish(actions + [.close("unknown client flags 0x\(String(flags.rawValue, radix: 16))")])
                }
                fixed = flags.contains(.fixedNewstyle)
                noZeroes = flags.contains(.noZeroes)
                if tlsMode == .required, !fixed {
                    return finish(actions + [.close("TLS is required and the client lacks fixed newstyle")])
                }
                phase = .optionHeader
            case .optionHeader:
                guard buffer.count - position >= NBDOptionRequestHeader.size else { return actions }
                let header: NBDOptionRequestHeader
                do {
                    header = try NBDOptionRequestHeader.decode(Array(buffer[position..<position + 16]))
                } catch { return finish(actions + [.close(error.description)]) }
                position += 16
                options += 1
                guard options <= maxOptions else { return finish(actions + [.close("too many options")]) }
                if header.length > UInt32(maxOptionLength) {
                    phase = .discarding(option: header.option, remaining: header.length)
                } else {
                    phase = .optionData(header)
                }
            case .discarding(let option, let remaining):
                let take = min(Int(remaining), buffer.count - position)
                position += take
                guard take == Int(remaining) else {
                    phase = .discarding(option: option, remaining: remaining - UInt32(take))
                    return actions
                }
                phase = .optionHeader
                guard fixed, option != NBDOption.exportName.rawValue else {
                    return finish(actions + [.close("option data too large")])
                }
                actions.append(.send(reply(option, .error(.tooBig))))
            case .optionData(let header):
                let length = Int(header.length)
                guard buffer.count - position >= length else { return actions }
                let data = Array(buffer[position..<position + length])
                position += length
                phase = .optionHeader
                let outcome = handle(header.option, data)
                actions += outcome
                if case .startTLS? = outcome.last, buffer.count > position {
                    // Plaintext sent behind STARTTLS would be taken as coming from inside TLS
                    // (CVE-2021-3716 in nbdkit): refuse it.
                    return finish(actions.dropLast() + [.close("data sent after STARTTLS before the TLS handshake")])
                }
                switch outcome.last {
                case .startTLS?:
                    phase = .awaitingTLS
                    return actions
                case .close?:
                    return finish(actions)
                case .transmit(let session, _)?:
                    let leftover = Array(buffer[position...])
                    position = buffer.count
                    actions[actions.count - 1] = .transmit(session, leftover: leftover)
                    return finish(actions)
                default: break
                }
            }
        }
    }

    private mutating func finish(_ actions: [Action]) -> [Action] {
        phase = .done
        return actions
    }

    private func reply(_ option: UInt32, _ type: NBDOptionReplyType, _ data: [UInt8] = []) -> [UInt8] {
        NBDOptionReplyHeader.encode(option: option, type: type, data: data)
    }

    /// The export a name selects: an exact match, else for "" the first export.
    func lookup(_ name: String) -> Int? {
        if let index = exports.firstIndex(where: { $0.name == name }) { return index }
        return name.isEmpty && !exports.isEmpty ? 0 : nil
    }
}

// MARK: - Options

extension NBDServerHandshake {
    private mutating func handle(_ code: UInt32, _ data: [UInt8]) -> [Action] {
        let option = NBDOption(rawValue: code)
        guard fixed || option == .exportName else {
            return [.close("option \(code) from a client without fixed newstyle")]
        }
        if tlsMode == .required, !tlsActive {
            switch option {
            case .startTLS?, .abort?: break
            case .exportName?: return [.close("EXPORT_NAME before TLS on a TLS-only server")]
            default: return [.send(reply(code, .error(.tlsRequired)))]
            }
        }
        switch option {
        case .exportName?:
            return exportName(data)
        case .abort?:
            return [.send(reply(code, .ack)), .close("the client aborted the handshake")]
        case .list?:
            guard data.isEmpty else { return [.send(reply(code, .error(.invalid)))] }
            guard allowList else { return [.send(reply(code, .error(.policy)))] }
            let servers = exports.map { export in
                reply(
                    code, .server, NBDOptionReplyData.encodeServer(name: export.name, description: export.description))
            }
            return [.send(servers.flatMap { $0 } + reply(code, .ack))]
        case .startTLS?:
            guard tlsMode != .off else { return [.send(reply(code, .error(.unsupported)))] }
            guard data.isEmpty, !tlsActive else { return [.send(reply(code, .error(.invalid)))] }
            // Everything negotiated in plaintext is forgotten: the client must ask again under TLS.
            structured = false
            extended = false
            metaContext = nil
            return [.send(reply(code, .ack)), .startTLS]
        case .info?, .go?:
            return info(code, data, go: option == .go)
        case .structuredReply?:
            guard data.isEmpty else { return [.send(reply(code, .error(.invalid)))] }
            guard !extended else { return [.send(reply(code, .error(.extendedHeadersRequired)))] }
            structured = true
            return [.send(reply(code, .ack))]
        case .extendedHeaders?:
            guard allowExtendedHeaders else { return [.send(reply(code, .error(.unsupported)))] }
            guard data.isEmpty else { return [.send(reply(code, .error(.invalid)))] }
            extended = true
            structured = true
            return [.send(reply(code, .ack))]
        case .listMetaContext?, .setMetaContext?:
            return metaContexts(code, data, set: option == .setMetaContext)
        case .peekExport?, nil:
            return [.send(reply(code, .error(.unsupported)))]
        }
    }

    private func exportName(_ data: [UInt8]) -> [Action] {
        guard !extended else { return [.close("EXPORT_NAME after extended headers")] }
        guard let name = try? NBDOptionRequest.decodeExportName(data), let index = lookup(name) else {
            return [.close("EXPORT_NAME for an unknown export")]
        }
        let export = exports[index]
        return [
            .send(NBDOptionReplyData.encodeExportName(export.info, zeroes: !noZeroes)),
            .transmit(session(index, name: name), leftover: []),
        ]
    }

    private mutating func info(_ code: UInt32, _ data: [UInt8], go: Bool) -> [Action] {
        guard let (name, requests) = try? NBDOptionRequest.decodeGoData(data) else {
            return [.send(reply(code, .error(.invalid)))]
        }
        guard let index = lookup(name) else { return [.send(reply(code, .error(.unknownExport)))] }
        let export = exports[index]
        var items: [NBDInfo] = [.export(export.info)]
        if requests.contains(NBDInfoType.name.rawValue) { items.append(.name(export.name)) }
        if requests.contains(NBDInfoType.description.rawValue), !export.description.isEmpty {
            items.append(.description(export.description))
        }
        // Always sent: clients that did not ask still learn the alignment their requests need.
        items.append(.blockSize(export.blockSize))
        let bytes = items.flatMap { reply(code, .info, $0.encode()) } + reply(code, .ack)
        guard go else { return [.send(bytes)] }
        return [.send(bytes), .transmit(session(index, name: name), leftover: [])]
    }

    private mutating func metaContexts(_ code: UInt32, _ data: [UInt8], set: Bool) -> [Action] {
        // SET forgets the previous selection even when it fails.
        if set { metaContext = nil }
        guard !set || structured else { return [.send(reply(code, .error(.invalid)))] }
        guard let (name, queries) = try? NBDOptionRequest.decodeMetaContextData(data) else {
            return [.send(reply(code, .error(.invalid)))]
        }
        guard lookup(name) != nil else { return [.send(reply(code, .error(.unknownExport)))] }
        let allocation = "base:allocation"
        let matches: Bool
        if set {
            matches = queries.contains(allocation)
            metaContext = (name, matches)
        } else {
            // LIST: no query lists everything; "base:" lists the whole namespace.
            matches = queries.isEmpty || queries.contains(allocation) || queries.contains("base:")
        }
        guard matches else { return [.send(reply(code, .ack))] }
        let id = set ? Self.allocationContextID : 0
        return [
            .send(
                reply(code, .metaContext, NBDOptionReplyData.encodeMetaContext(id: id, name: allocation))
                    + reply(code, .ack))
        ]
    }

    /// The session for export `index`, entered by the name `name`: `base:allocation` applies only if the
    /// last `SET_META_CONTEXT` named the same export name (the spec's rule).
    private func session(_ index: Int, name: String) -> NBDServerSession {
        let export = exports[index]
        var allocation: UInt32?
        if let metaContext, metaContext.allocation, metaContext.export == name, structured {
            allocation = Self.allocationContextID
        }
        return NBDServerSession(
            exportIndex: index, export: export, structuredReplies: structured, extendedHeaders: extended,
            allocationContext: allocation, tls: tlsActive)
    }
}
