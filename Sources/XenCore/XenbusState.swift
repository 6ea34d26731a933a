/// The states of a split device's xenbus handshake, as written to the `state` keys in xenstore.
///
/// OCaml: `Xenbus_state` / mirage's `Device_state.t`
public enum XenbusState: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case unknown = 0
    case initialising = 1
    case initWait = 2
    case initialised = 3
    case connected = 4
    case closing = 5
    case closed = 6
    case reconfiguring = 7
    case reconfigured = 8

    /// Parses the decimal text found in a `state` key; nil for anything else (an untrusted peer wrote it).
    ///
    /// OCaml: `Device_state.of_string`
    public init?(xenstoreValue text: String) {
        guard let raw = UInt32(text.trimmingSuffixNUL), let state = XenbusState(rawValue: raw) else { return nil }
        self = state
    }

    /// The decimal text written to xenstore.
    ///
    /// OCaml: `Device_state.to_string`
    public var xenstoreValue: String { String(rawValue) }

    public var description: String {
        switch self {
        case .unknown: "Unknown"
        case .initialising: "Initialising"
        case .initWait: "InitWait"
        case .initialised: "Initialised"
        case .connected: "Connected"
        case .closing: "Closing"
        case .closed: "Closed"
        case .reconfiguring: "Reconfiguring"
        case .reconfigured: "Reconfigured"
        }
    }
}

extension String {
    fileprivate var trimmingSuffixNUL: String {
        var text = self
        while text.last == "\0" { text.removeLast() }
        return text
    }
}
