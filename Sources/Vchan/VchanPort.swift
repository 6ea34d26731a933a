/// A vchan port: the name under which a server publishes itself for one client, `[a-zA-Z0-9_-]+` (it
/// becomes a xenstore path component).
///
/// OCaml: `Vchan.Port.t`
public struct VchanPort: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The name.
    public let rawValue: String

    /// Validates `rawValue`; nil unless it matches `[a-zA-Z0-9_-]+`.
    ///
    /// OCaml: `Vchan.Port.of_string`
    public init?(rawValue: String) {
        guard !rawValue.isEmpty,
            rawValue.utf8.allSatisfy({ byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
            })
        else { return nil }
        self.rawValue = rawValue
    }

    /// Validates `name`, throwing `.invalidPort`.
    ///
    /// OCaml: `Vchan.Port.of_string_exn`
    public init(_ name: String) throws(VchanError) {
        guard let port = VchanPort(rawValue: name) else { throw .invalidPort(name) }
        self = port
    }

    /// The name. OCaml: `Vchan.Port.to_string`
    public var description: String { rawValue }
}
