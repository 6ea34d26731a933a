/// A reply (or watch event) with its payload decoded. Replies carry the request's type; which case a payload
/// decodes to depends on that type, so `XS_READ`'s raw value and `XS_DIRECTORY`'s name list stay apart.
///
/// OCaml: `Xs_protocol.Response.payload`
public enum XenStoreReply: Hashable, Sendable {
    /// `XS_READ`: the value, binary, with no trailing NUL. OCaml: `Read value`
    case read([UInt8])
    /// `XS_DIRECTORY`: child names. OCaml: `Directory names`
    case directory([String])
    /// `XS_DIRECTORY_PART`: the node's generation, the children in this chunk and whether it is the last
    /// chunk (marked by an extra NUL). OCaml: none in `Response` (parsed by `Xs_client_unix.directory`)
    case directoryPart(generation: String, children: [String], complete: Bool)
    /// `XS_GET_PERMS`. OCaml: `Getperms acl`
    case permissions(XenStorePermissions)
    /// `XS_TRANSACTION_START`: the new transaction id. OCaml: `Transaction_start tid`
    case transactionStarted(UInt32)
    /// `XS_GET_DOMAIN_PATH`. OCaml: `Getdomainpath path`
    case domainPath(String)
    /// `XS_IS_DOMAIN_INTRODUCED`: `T` or `F`. OCaml: `Isintroduced b`
    case isDomainIntroduced(Bool)
    /// `XS_CONTROL`: implementation-specific text. OCaml: `Debug lines`
    case control([UInt8])
    /// `OK` for `WRITE`, `MKDIR`, `RM`, `SET_PERMS`, `WATCH`, `UNWATCH`, `TRANSACTION_END`, `INTRODUCE`,
    /// `RELEASE`, `RESUME`, `SET_TARGET`, `RESET_WATCHES`; the associated value is that type.
    /// OCaml: `Write`, `Mkdir`, `Rm`, `Setperms`, `Watch`, ...
    case ok(XenStoreMessageType)
    /// `XS_ERROR`: the error's name. OCaml: `Error name`
    case error(XenStoreErrorName)
    /// `XS_WATCH_EVENT`: the path that changed (relative if the watch was) and the watch's token.
    /// OCaml: `Watchevent (path, token)`
    case watchEvent(path: String, token: String)

    /// The types that answer with `OK`.
    public static let okTypes: Set<XenStoreMessageType> = [
        .write, .mkdir, .rm, .setPermissions, .watch, .unwatch, .transactionEnd, .introduce, .release, .resume,
        .setTarget, .resetWatches,
    ]

    /// The header type. OCaml: `Xs_protocol.Response.ty_of_payload`
    public var type: XenStoreMessageType {
        switch self {
        case .read: .read
        case .directory: .directory
        case .directoryPart: .directoryPart
        case .permissions: .getPermissions
        case .transactionStarted: .transactionStart
        case .domainPath: .getDomainPath
        case .isDomainIntroduced: .isDomainIntroduced
        case .control: .control
        case .ok(let type): type
        case .error: .error
        case .watchEvent: .watchEvent
        }
    }

    /// The payload bytes. OCaml: `Xs_protocol.Response.data_of_payload`
    public var payload: [UInt8] {
        switch self {
        case .read(let value), .control(let value): value
        case .directory(let names): XenStorePayload.strings(names)
        case .directoryPart(let generation, let children, let complete):
            XenStorePayload.strings([generation] + children) + (complete ? [0] : [])
        case .permissions(let permissions): XenStorePayload.strings(permissions.strings)
        case .transactionStarted(let tid): XenStorePayload.strings([String(tid)])
        case .domainPath(let path): XenStorePayload.strings([path])
        case .isDomainIntroduced(let yes): XenStorePayload.strings([yes ? "T" : "F"])
        case .ok: XenStorePayload.strings(["OK"])
        case .error(let name): XenStorePayload.strings([name.rawValue])
        case .watchEvent(let path, let token): XenStorePayload.strings([path, token])
        }
    }

    /// The reply packet for a request with these ids (watch events always go out with 0, 0).
    ///
    /// OCaml: `Xs_protocol.Response.print`
    public func packet(requestID: UInt32, transactionID: UInt32) -> XenStorePacket {
        if case .watchEvent = self { return XenStorePacket(type: .watchEvent, payload: payload) }
        return XenStorePacket(type: type, requestID: requestID, transactionID: transactionID, payload: payload)
    }

    /// Decodes a server packet by its header type.
    ///
    /// OCaml: `Xs_protocol.Unmarshal` (`string`, `list`, `acl`, `int32`, `ok`) and `Response` parsing
    public init(decoding packet: XenStorePacket) throws(XenStoreProtocolError) {
        let payload = packet.payload
        let type = packet.type
        switch type {
        case .read: self = .read(payload)
        case .control: self = .control(payload)
        case .directory:
            // Be lenient about a missing final NUL: some servers omit it.
            let names = payload.split(separator: 0, omittingEmptySubsequences: false).map {
                String(decoding: $0, as: UTF8.self)
            }
            self = .directory(payload.last == 0 || payload.isEmpty ? Array(names.dropLast()) : names)
        case .directoryPart:
            guard let nul = payload.firstIndex(of: 0) else {
                throw .malformedPayload(type: type, reason: "no generation")
            }
            let generation = String(decoding: payload[..<nul], as: UTF8.self)
            var rest = Array(payload[(nul + 1)...])
            var complete = false
            if rest == [0] {
                complete = true
                rest = []
            } else if rest.count >= 2 && rest[rest.count - 1] == 0 && rest[rest.count - 2] == 0 {
                complete = true
                rest.removeLast()
            }
            guard let children = XenStorePayload.terminatedStrings(rest) else {
                throw .malformedPayload(type: type, reason: "unterminated child name")
            }
            self = .directoryPart(generation: generation, children: children, complete: complete)
        case .getPermissions:
            guard let parts = XenStorePayload.terminatedStrings(payload),
                let permissions = XenStorePermissions(strings: parts)
            else { throw .malformedPayload(type: type, reason: "bad permission list") }
            self = .permissions(permissions)
        case .transactionStart:
            guard let tid = UInt32(XenStorePayload.text(payload)) else {
                throw .malformedPayload(type: type, reason: "transaction id is not a number")
            }
            self = .transactionStarted(tid)
        case .getDomainPath: self = .domainPath(XenStorePayload.text(payload))
        case .isDomainIntroduced:
            switch XenStorePayload.text(payload) {
            case "T": self = .isDomainIntroduced(true)
            case "F": self = .isDomainIntroduced(false)
            default: throw .malformedPayload(type: type, reason: "expected T or F")
            }
        case .error: self = .error(XenStoreErrorName(rawValue: XenStorePayload.text(payload)))
        case .watchEvent:
            guard let nul = payload.firstIndex(of: 0) else {
                throw .malformedPayload(type: type, reason: "no NUL after the path")
            }
            let path = String(decoding: payload[..<nul], as: UTF8.self)
            let tokenBytes = payload[(nul + 1)...]
            let tokenEnd = tokenBytes.firstIndex(of: 0) ?? tokenBytes.endIndex
            self = .watchEvent(path: path, token: String(decoding: tokenBytes[..<tokenEnd], as: UTF8.self))
        case let other where Self.okTypes.contains(other):
            guard XenStorePayload.text(payload) == "OK" else {
                throw .malformedPayload(type: type, reason: "expected OK")
            }
            self = .ok(other)
        default: throw .unsupportedMessageType(type)
        }
    }
}
