// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md). Numbers, not behaviour.

/// Magic numbers that frame every NBD message.
///
/// OCaml: `Nbd.Protocol` (the magic constants in `protocol.ml`)
public enum NBDMagic {
    /// "NBDMAGIC": the first 8 bytes a server sends.
    public static let initial: UInt64 = 0x4e42_444d_4147_4943
    /// "IHAVEOPT": newstyle handshake (also the magic of every option a client sends).
    public static let option: UInt64 = 0x4948_4156_454f_5054
    /// Oldstyle handshake magic.
    public static let oldstyle: UInt64 = 0x0042_0281_8612_53
    /// Option reply magic.
    public static let optionReply: UInt64 = 0x0003_e889_0455_65a9
    /// Compact request magic.
    public static let request: UInt32 = 0x2560_9513
    /// Extended (64-bit) request magic.
    public static let extendedRequest: UInt32 = 0x21e4_1c71
    /// Simple reply magic.
    public static let simpleReply: UInt32 = 0x6744_6698
    /// Structured reply magic.
    public static let structuredReply: UInt32 = 0x668e_33ef
    /// Extended reply magic.
    public static let extendedReply: UInt32 = 0x6e8a_278c
}

/// Handshake flags the server sends after the magic.
///
/// OCaml: `Nbd.Protocol.GlobalFlag`
public struct NBDHandshakeFlags: OptionSet, Sendable, Hashable {
    /// The wire value.
    public let rawValue: UInt16
    /// Memberwise initializer.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NBD_FLAG_FIXED_NEWSTYLE`.
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_NO_ZEROES`.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// Client flags sent in reply to the handshake flags.
///
/// OCaml: `Nbd.Protocol.ClientFlag`
public struct NBDClientFlags: OptionSet, Sendable, Hashable {
    /// The wire value.
    public let rawValue: UInt32
    /// Memberwise initializer.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_C_NO_ZEROES`.
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)
}

/// Per-export transmission flags.
///
/// OCaml: `Nbd.Protocol.PerExportFlag`
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The wire value.
    public let rawValue: UInt16
    /// Memberwise initializer.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `hasFlags`.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    /// `readOnly`.
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    /// `sendFlush`.
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    /// `sendFUA`.
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    /// `rotational`.
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    /// `sendTrim`.
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    /// `sendWriteZeroes`.
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    /// `sendDF`.
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    /// `canMultiConn`.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
    /// `sendResize`.
    public static let sendResize = NBDTransmissionFlags(rawValue: 1 << 9)
    /// `sendCache`.
    public static let sendCache = NBDTransmissionFlags(rawValue: 1 << 10)
    /// `sendFastZero`.
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 1 << 11)
    /// `blockStatusPayload`.
    public static let blockStatusPayload = NBDTransmissionFlags(rawValue: 1 << 12)

    private static let names: [(NBDTransmissionFlags, String)] = [
        (.readOnly, "read_only"), (.sendFlush, "flush"), (.sendFUA, "fua"), (.rotational, "rotational"),
        (.sendTrim, "trim"), (.sendWriteZeroes, "zero"), (.sendDF, "df"), (.canMultiConn, "multi_conn"),
        (.sendResize, "resize"), (.sendCache, "cache"), (.sendFastZero, "fast_zero"),
        (.blockStatusPayload, "block_status_payload"),
    ]

    /// A readable rendering.
    public var description: String {
        Self.names.filter { contains($0.0) }.map(\.1).joined(separator: " ")
    }
}

/// Option codes a client sends during the fixed-newstyle handshake.
///
/// OCaml: `Nbd.Protocol.Option`
public enum NBDOption: UInt32, Sendable {
    case exportName = 1
    case abort = 2
    case list = 3
    case peekExport = 4
    case startTLS = 5
    case info = 6
    case go = 7
    case structuredReply = 8
    case listMetaContext = 9
    case setMetaContext = 10
    case extendedHeaders = 11
}

/// Option reply types (`NBD_REP_*`); error replies have bit 31 set.
///
/// OCaml: `Nbd.Protocol.OptionResponse`
public enum NBDOptionReplyType: Sendable, Equatable {
    case ack, server, info, metaContext
    case error(NBDOptionError)
    case unknown(UInt32)

    /// Decodes a raw reply type.
    public init(rawValue: UInt32) {
        switch rawValue {
        case 1: self = .ack
        case 2: self = .server
        case 3: self = .info
        case 4: self = .metaContext
        default:
            if rawValue & 0x8000_0000 != 0 {
                self = .error(NBDOptionError(rawValue: rawValue))
            } else {
                self = .unknown(rawValue)
            }
        }
    }

    /// The wire value (`NBD_REP_*`).
    public var rawValue: UInt32 {
        switch self {
        case .ack: 1
        case .server: 2
        case .info: 3
        case .metaContext: 4
        case .error(let error): error.rawValue
        case .unknown(let raw): raw
        }
    }
}

/// Error replies to an option (`NBD_REP_ERR_*`).
///
/// OCaml: `Nbd.Protocol.OptionResponse` (the `Policy`/`Unsupported`... cases)
public enum NBDOptionError: Sendable, Equatable, CustomStringConvertible {
    case unsupported, policy, invalid, platform, tlsRequired, unknownExport, shutdown, blockSizeRequired
    case tooBig, extendedHeadersRequired
    case other(UInt32)

    /// Decodes `NBD_REP_ERR_*` (bit 31 set).
    public init(rawValue: UInt32) {
        switch rawValue & 0x7fff_ffff {
        case 1: self = .unsupported
        case 2: self = .policy
        case 3: self = .invalid
        case 4: self = .platform
        case 5: self = .tlsRequired
        case 6: self = .unknownExport
        case 7: self = .shutdown
        case 8: self = .blockSizeRequired
        case 9: self = .tooBig
        case 10: self = .extendedHeadersRequired
        default: self = .other(rawValue)
        }
    }

    /// The wire value (`NBD_REP_ERR_*`, bit 31 set).
    public var rawValue: UInt32 {
        let code: UInt32
        switch self {
        case .unsupported: code = 1
        case .policy: code = 2
        case .invalid: code = 3
        case .platform: code = 4
        case .tlsRequired: code = 5
        case .unknownExport: code = 6
        case .shutdown: code = 7
        case .blockSizeRequired: code = 8
        case .tooBig: code = 9
        case .extendedHeadersRequired: code = 10
        case .other(let raw): return raw | 0x8000_0000
        }
        return code | 0x8000_0000
    }

    /// A readable rendering.
    public var description: String {
        switch self {
        case .unsupported: "unsupported"
        case .policy: "denied by server policy"
        case .invalid: "invalid"
        case .platform: "not supported on this platform"
        case .tlsRequired: "the server requires TLS"
        case .unknownExport: "unknown export"
        case .shutdown: "the server is shutting down"
        case .blockSizeRequired: "block size required"
        case .tooBig: "request too big"
        case .extendedHeadersRequired: "extended headers required"
        case .other(let raw): "error 0x\(String(raw, radix: 16))"
        }
    }
}

/// `NBD_INFO_*` items carried by `NBD_REP_INFO`.
///
/// OCaml: none (ocaml-nbd has no `OPT_INFO`/`OPT_GO`)
public enum NBDInfoType: UInt16, Sendable {
    case export = 0
    case name = 1
    case description = 2
    case blockSize = 3
}

/// Transmission commands (`NBD_CMD_*`).
///
/// OCaml: `Nbd.Protocol.Command`
public enum NBDCommand: UInt16, Sendable, CustomStringConvertible {
    case read = 0
    case write = 1
    case disconnect = 2
    case flush = 3
    case trim = 4
    case cache = 5
    case writeZeroes = 6
    case blockStatus = 7

    /// A readable rendering.
    public var description: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .disconnect: "disconnect"
        case .flush: "flush"
        case .trim: "trim"
        case .cache: "cache"
        case .writeZeroes: "write_zeroes"
        case .blockStatus: "block_status"
        }
    }
}

/// Command flags (`NBD_CMD_FLAG_*`).
///
/// OCaml: none (ocaml-nbd sends no command flags)
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    /// The wire value.
    public let rawValue: UInt16
    /// Memberwise initializer.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `fua`.
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    /// `noHole`.
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    /// `dontFragment`.
    public static let dontFragment = NBDCommandFlags(rawValue: 1 << 2)
    /// `reqOne`.
    public static let reqOne = NBDCommandFlags(rawValue: 1 << 3)
    /// `fastZero`.
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
    /// `payloadLength`.
    public static let payloadLength = NBDCommandFlags(rawValue: 1 << 5)
}

/// Structured reply chunk types (`NBD_REPLY_TYPE_*`).
///
/// OCaml: none (ocaml-nbd has no structured replies)
public enum NBDChunkType {
    /// `none`.
    public static let none: UInt16 = 0
    /// `offsetData`.
    public static let offsetData: UInt16 = 1
    /// `offsetHole`.
    public static let offsetHole: UInt16 = 2
    /// `blockStatus`.
    public static let blockStatus: UInt16 = 5
    /// `blockStatusExtended`.
    public static let blockStatusExtended: UInt16 = 6
    /// `error`.
    public static let error: UInt16 = 0x8001
    /// `errorOffset`.
    public static let errorOffset: UInt16 = 0x8002
    /// `NBD_REPLY_FLAG_DONE`.
    public static let flagDone: UInt16 = 1
}

/// `base:allocation` extent flags.
///
/// OCaml: none
public struct NBDAllocationFlags: OptionSet, Sendable, Hashable {
    /// The wire value.
    public let rawValue: UInt64
    /// Memberwise initializer.
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// `NBD_STATE_HOLE`: not allocated.
    public static let hole = NBDAllocationFlags(rawValue: 1 << 0)
    /// `NBD_STATE_ZERO`: reads as zeroes.
    public static let zero = NBDAllocationFlags(rawValue: 1 << 1)
}

/// The errno values a server may return (`NBD_EPERM`...), by name.
///
/// OCaml: `Nbd.Protocol.Error.t`
public enum NBDErrno: Sendable, Equatable, CustomStringConvertible {
    case eperm, eio, enomem, einval, enospc, eoverflow, enotsup, eshutdown
    case other(UInt32)

    /// Decodes the wire value.
    public init(rawValue: UInt32) {
        switch rawValue {
        case 1: self = .eperm
        case 5: self = .eio
        case 12: self = .enomem
        case 22: self = .einval
        case 28: self = .enospc
        case 75: self = .eoverflow
        case 95: self = .enotsup
        case 108: self = .eshutdown
        default: self = .other(rawValue)
        }
    }

    /// The wire value.
    public var rawValue: UInt32 {
        switch self {
        case .eperm: 1
        case .eio: 5
        case .enomem: 12
        case .einval: 22
        case .enospc: 28
        case .eoverflow: 75
        case .enotsup: 95
        case .eshutdown: 108
        case .other(let raw): raw
        }
    }

    /// A readable rendering.
    public var description: String {
        switch self {
        case .eperm: "EPERM"
        case .eio: "EIO"
        case .enomem: "ENOMEM"
        case .einval: "EINVAL"
        case .enospc: "ENOSPC"
        case .eoverflow: "EOVERFLOW"
        case .enotsup: "ENOTSUP"
        case .eshutdown: "ESHUTDOWN"
        case .other(let raw): "errno \(raw)"
        }
    }
}
