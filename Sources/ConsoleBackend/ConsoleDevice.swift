public import XenCore

/// Which console of a domain: the primary one (`/local/domain/<id>/console`, set up by the domain builder,
/// ring from start info / grant 0) or an extra PV console (`/local/domain/<id>/device/console/<devid>`).
///
/// OCaml: `Console_xen.connect` id (`"0"`/`""` = initial console, else a device id)
public enum ConsoleDevice: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The primary console (hvc0 in Linux).
    case primary
    /// An extra console `device/console/<devid>`.
    case extra(UInt32)

    public var description: String {
        switch self {
        case .primary: "console"
        case .extra(let devid): "device/console/\(devid)"
        }
    }
}

/// A console: which domain and which of its consoles.
///
/// OCaml: `Conback` `(domid, devid)`
public struct ConsoleID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The guest.
    public var domain: DomainID
    /// Which of its consoles.
    public var device: ConsoleDevice

    /// A console id.
    public init(domain: DomainID, device: ConsoleDevice) {
        self.domain = domain
        self.device = device
    }

    /// The guest's directory for this console: `/local/domain/<id>/console` or `.../device/console/<devid>`.
    ///
    /// OCaml: `Conback.mk_frontend_path`
    public var frontendPath: String { "/local/domain/\(domain.rawValue)/\(device)" }

    /// The backend directory for an extra console served by `backend`:
    /// `/local/domain/<be>/backend/console/<fe>/<devid>`; nil for the primary console (it has none).
    ///
    /// OCaml: `Conback.mk_backend_path`
    public func backendPath(backend: DomainID) -> String? {
        guard case .extra(let devid) = device else { return nil }
        return "/local/domain/\(backend.rawValue)/backend/console/\(domain.rawValue)/\(devid)"
    }

    public static func < (lhs: ConsoleID, rhs: ConsoleID) -> Bool {
        (lhs.domain, lhs.device) < (rhs.domain, rhs.device)
    }

    public var description: String { "dom\(domain.rawValue)/\(device)" }
}

/// The xenstore keys of the console protocol (console.txt, mirage `Conproto`).
///
/// OCaml: `Conproto.RingInfo._ring_ref`, `_port`, `State._state`, ...
public enum ConsoleKeys {
    /// Grant reference (extra consoles) or gfn (primary console, classic xenconsoled) of the ring page.
    public static let ringRef = "ring-ref"
    /// The guest's unbound event channel port.
    public static let port = "port"
    /// XenbusState of frontend or backend (extra consoles only).
    public static let state = "state"
    /// Backend-written: the pty slave path.
    public static let tty = "tty"
    /// Which daemon serves the console (`xenconsoled` or `ioemu`); absent means xenconsoled.
    public static let type = "type"
    /// Optional console name (protocol extension).
    public static let name = "name"
    /// Frontend → backend directory, and the backend domain id.
    public static let backend = "backend"
    public static let backendID = "backend-id"
    /// Backend → frontend directory, and the frontend domain id.
    public static let frontend = "frontend"
    public static let frontendID = "frontend-id"
    /// `vt100`.
    public static let `protocol` = "protocol"
    /// Output buffer limit xenconsoled honours (we never drop, so it is informational).
    public static let limit = "limit"
    /// `pty`.
    public static let output = "output"
    /// Backend `online` flag.
    public static let online = "online"
}

/// Where a frontend's ring lives: the grant reference and the event channel port it allocated.
///
/// OCaml: `Conproto.RingInfo.t`
public struct ConsoleRingInfo: Hashable, Sendable {
    /// The ring page's grant reference.
    public var ringRef: GrantRef
    /// The guest's event channel port.
    public var port: EventChannelPort

    /// Ring info from its parts.
    public init(ringRef: GrantRef, port: EventChannelPort) {
        self.ringRef = ringRef
        self.port = port
    }

    /// Parses the frontend's `ring-ref` and `port` values (untrusted text): typed errors naming the path.
    ///
    /// OCaml: `Conproto.RingInfo.of_assoc_list`
    public init(directory: String, ringRef: String?, port: String?) throws(ConsoleError) {
        let refPath = "\(directory)/\(ConsoleKeys.ringRef)"
        let portPath = "\(directory)/\(ConsoleKeys.port)"
        guard let ringRef else { throw .missingKey(path: refPath) }
        guard let port else { throw .missingKey(path: portPath) }
        guard let ref = GrantRef(ringRef.trimmingNUL) else { throw .invalidValue(path: refPath, value: ringRef) }
        guard let channel = EventChannelPort(port.trimmingNUL) else {
            throw .invalidValue(path: portPath, value: port)
        }
        self.init(ringRef: ref, port: channel)
    }
}

extension String {
    /// Xenstore values written by C tools sometimes carry a trailing NUL.
    var trimmingNUL: String {
        var text = self
        while text.last == "\0" { text.removeLast() }
        return text
    }
}
