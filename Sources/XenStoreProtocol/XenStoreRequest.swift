public import XenCore

/// A request with its payload decoded: one case per client-to-server message type of Xen 4.17 plus
/// `DIRECTORY_PART`.
///
/// OCaml: `Xs_protocol.Request.payload` (`PathOp`, `Watch`, `Transaction_start`, `Introduce`, `Debug`...)
public enum XenStoreRequest: Hashable, Sendable {
    /// `XS_READ path`. OCaml: `PathOp (path, Read)`
    case read(path: String)
    /// `XS_WRITE path value` (creates missing parents). OCaml: `PathOp (path, Write value)`
    case write(path: String, value: [UInt8])
    /// `XS_MKDIR path`. OCaml: `PathOp (path, Mkdir)`
    case mkdir(path: String)
    /// `XS_RM path` (and everything below). OCaml: `PathOp (path, Rm)`
    case rm(path: String)
    /// `XS_DIRECTORY path`. OCaml: `PathOp (path, Directory)`
    case directory(path: String)
    /// `XS_DIRECTORY_PART path offset`: children from byte `offset` of the child list.
    /// OCaml: `PathOp (path, Directory_part offset)`
    case directoryPart(path: String, offset: UInt32)
    /// `XS_GET_PERMS path`. OCaml: `PathOp (path, Getperms)`
    case getPermissions(path: String)
    /// `XS_SET_PERMS path perms...`. OCaml: `PathOp (path, Setperms acl)`
    case setPermissions(path: String, permissions: XenStorePermissions)
    /// `XS_WATCH path token`. OCaml: `Watch (path, token)`
    case watch(path: String, token: String)
    /// `XS_UNWATCH path token`. OCaml: `Unwatch (path, token)`
    case unwatch(path: String, token: String)
    /// `XS_TRANSACTION_START`. OCaml: `Transaction_start`
    case transactionStart
    /// `XS_TRANSACTION_END T|F`. OCaml: `Transaction_end commit`
    case transactionEnd(commit: Bool)
    /// `XS_INTRODUCE domid gfn port`. OCaml: `Introduce (domid, mfn, port)`
    case introduce(domain: DomainID, gfn: Int64, port: EventChannelPort)
    /// `XS_RELEASE domid`. OCaml: `Release domid`
    case release(domain: DomainID)
    /// `XS_RESUME domid`. OCaml: `Resume domid`
    case resume(domain: DomainID)
    /// `XS_GET_DOMAIN_PATH domid`. OCaml: `Getdomainpath domid`
    case getDomainPath(domain: DomainID)
    /// `XS_IS_DOMAIN_INTRODUCED domid`. OCaml: `Isintroduced domid`
    case isDomainIntroduced(domain: DomainID)
    /// `XS_SET_TARGET domid target`. OCaml: `Set_target (mine, yours)`
    case setTarget(domain: DomainID, target: DomainID)
    /// `XS_RESET_WATCHES`: drop all of the caller's watches and transactions. OCaml: `Reset_watches`
    case resetWatches
    /// `XS_CONTROL args...` (`print`, `check`, ...). OCaml: `Debug args`
    case control(arguments: [String])

    /// The header type of this request. OCaml: `Xs_protocol.Request.ty_of_payload`
    public var type: XenStoreMessageType {
        switch self {
        case .read: .read
        case .write: .write
        case .mkdir: .mkdir
        case .rm: .rm
        case .directory: .directory
        case .directoryPart: .directoryPart
        case .getPermissions: .getPermissions
        case .setPermissions: .setPermissions
        case .watch: .watch
        case .unwatch: .unwatch
        case .transactionStart: .transactionStart
        case .transactionEnd: .transactionEnd
        case .introduce: .introduce
        case .release: .release
        case .resume: .resume
        case .getDomainPath: .getDomainPath
        case .isDomainIntroduced: .isDomainIntroduced
        case .setTarget: .setTarget
        case .resetWatches: .resetWatches
        case .control: .control
        }
    }

    /// True for requests that act inside a transaction when the header carries a tid (path operations and
    /// `TRANSACTION_END`); the others always travel with tid 0.
    ///
    /// OCaml: `Xs_protocol.Request.transactional_of_payload`
    public var isTransactional: Bool {
        switch self {
        case .read, .write, .mkdir, .rm, .directory, .directoryPart, .getPermissions, .setPermissions,
            .transactionEnd:
            true
        default: false
        }
    }

    /// The payload bytes. OCaml: `Xs_protocol.Request.data_of_payload`
    public var payload: [UInt8] {
        switch self {
        case .read(let path), .mkdir(let path), .rm(let path), .directory(let path), .getPermissions(let path):
            return XenStorePayload.strings([path])
        case .write(let path, let value):
            return XenStorePayload.strings([path]) + value
        case .directoryPart(let path, let offset):
            return XenStorePayload.strings([path, String(offset)])
        case .setPermissions(let path, let permissions):
            return XenStorePayload.strings([path] + permissions.strings)
        case .watch(let path, let token), .unwatch(let path, let token):
            return XenStorePayload.strings([path, token])
        case .transactionStart, .resetWatches:
            return [0]
        case .transactionEnd(let commit):
            return XenStorePayload.strings([commit ? "T" : "F"])
        case .introduce(let domain, let gfn, let port):
            return XenStorePayload.strings([String(domain.rawValue), String(gfn), String(port.rawValue)])
        case .release(let domain), .resume(let domain), .getDomainPath(let domain), .isDomainIntroduced(let domain):
            return XenStorePayload.strings([String(domain.rawValue)])
        case .setTarget(let domain, let target):
            return XenStorePayload.strings([String(domain.rawValue), String(target.rawValue)])
        case .control(let arguments):
            return XenStorePayload.strings(arguments)
        }
    }

    /// The whole packet; `transactionID` is put in the header only for transactional requests.
    ///
    /// OCaml: `Xs_protocol.Request.print`
    public func packet(requestID: UInt32, transactionID: UInt32 = 0) -> XenStorePacket {
        XenStorePacket(
            type: type, requestID: requestID, transactionID: isTransactional ? transactionID : 0, payload: payload)
    }

    /// Decodes a request packet with xenstored's argument rules; `malformedPayload` (answered `EINVAL`) or
    /// `unsupportedMessageType` (answered `ENOSYS`) otherwise.
    ///
    /// OCaml: `Xs_protocol.Request.parse`
    public init(decoding packet: XenStorePacket) throws(XenStoreProtocolError) {
        let payload = packet.payload
        let type = packet.type
        switch type {
        case .read: self = .read(path: try XenStorePayload.single(payload, type))
        case .mkdir: self = .mkdir(path: try XenStorePayload.single(payload, type))
        case .rm: self = .rm(path: try XenStorePayload.single(payload, type))
        case .directory: self = .directory(path: try XenStorePayload.single(payload, type))
        case .getPermissions: self = .getPermissions(path: try XenStorePayload.single(payload, type))
        case .write:
            guard let nul = payload.firstIndex(of: 0) else {
                throw .malformedPayload(type: type, reason: "no NUL after the path")
            }
            self = .write(
                path: String(decoding: payload[..<nul], as: UTF8.self), value: Array(payload[(nul + 1)...]))
        case .directoryPart:
            let parts = try XenStorePayload.atLeast(2, payload, type)
            guard parts.count == 2 else { throw .malformedPayload(type: type, reason: "expected path and offset") }
            self = .directoryPart(path: parts[0], offset: try Self.unsigned(parts[1], type))
        case .setPermissions:
            let parts = try XenStorePayload.atLeast(2, payload, type)
            guard let permissions = XenStorePermissions(strings: Array(parts.dropFirst())) else {
                throw .malformedPayload(type: type, reason: "bad permission entry")
            }
            self = .setPermissions(path: parts[0], permissions: permissions)
        case .watch:
            let parts = try XenStorePayload.atLeast(2, payload, type)
            self = .watch(path: parts[0], token: parts[1])
        case .unwatch:
            let parts = try XenStorePayload.atLeast(2, payload, type)
            self = .unwatch(path: parts[0], token: parts[1])
        case .transactionStart: self = .transactionStart
        case .transactionEnd:
            switch try XenStorePayload.single(payload, type) {
            case "T": self = .transactionEnd(commit: true)
            case "F": self = .transactionEnd(commit: false)
            default: throw .malformedPayload(type: type, reason: "expected T or F")
            }
        case .introduce:
            let parts = try XenStorePayload.atLeast(3, payload, type)
            self = .introduce(
                domain: try Self.domain(parts[0], type), gfn: XenStorePayload.cInteger(parts[1]),
                port: EventChannelPort(try Self.unsigned(parts[2], type)))
        case .release: self = .release(domain: try Self.domain(XenStorePayload.single(payload, type), type))
        case .resume: self = .resume(domain: try Self.domain(XenStorePayload.single(payload, type), type))
        case .getDomainPath:
            self = .getDomainPath(domain: try Self.domain(XenStorePayload.single(payload, type), type))
        case .isDomainIntroduced:
            self = .isDomainIntroduced(domain: try Self.domain(XenStorePayload.single(payload, type), type))
        case .setTarget:
            let parts = try XenStorePayload.atLeast(2, payload, type)
            self = .setTarget(domain: try Self.domain(parts[0], type), target: try Self.domain(parts[1], type))
        case .resetWatches: self = .resetWatches
        case .control:
            let parts = try XenStorePayload.atLeast(1, payload, type)
            self = .control(arguments: parts)
        default: throw .unsupportedMessageType(type)
        }
    }

    // MARK: - Numbers as xenstored reads them (atoi), range-checked

    private static func domain(_ text: String, _ type: XenStoreMessageType) throws(XenStoreProtocolError) -> DomainID {
        guard let value = UInt16(exactly: XenStorePayload.cInteger(text)) else {
            throw .malformedPayload(type: type, reason: "domain id \"\(text)\" out of range")
        }
        return DomainID(value)
    }

    private static func unsigned(_ text: String, _ type: XenStoreMessageType) throws(XenStoreProtocolError) -> UInt32 {
        guard let value = UInt32(exactly: XenStorePayload.cInteger(text)) else {
            throw .malformedPayload(type: type, reason: "number \"\(text)\" out of range")
        }
        return value
    }
}
