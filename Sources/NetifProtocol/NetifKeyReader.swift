/// Typed reads of a directory's xenstore keys (already fetched into a dictionary of relative names), as
/// written by an untrusted peer: whitespace and trailing NULs are tolerated, anything else malformed throws.
///
/// OCaml: mirage-net-xen's `read_int` / `read_feature` (which treat anything but "1" as off)
public struct NetifKeyReader: Sendable {
    /// The keys, by name relative to the directory.
    public let keys: [String: String]

    /// A reader over `keys`.
    public init(_ keys: [String: String]) { self.keys = keys }

    /// The trimmed value of `key`, nil when absent.
    public func text(_ key: String) -> String? {
        guard let raw = keys[key] else { return nil }
        var view = Substring(raw)
        while let last = view.last, last == "\0" || last == " " || last == "\n" { view.removeLast() }
        while let first = view.first, first == " " || first == "\n" { view.removeFirst() }
        return String(view)
    }

    /// An unsigned decimal value; `fallback` when absent.
    public func number<T: FixedWidthInteger>(_ key: String, default fallback: T) throws(NetifKeyError) -> T {
        guard let value = text(key) else { return fallback }
        guard let parsed = T(value, radix: 10), parsed >= 0 else { throw .malformed(key: key, value: value) }
        return parsed
    }

    /// A required unsigned decimal value.
    public func required<T: FixedWidthInteger>(_ key: String, as type: T.Type = T.self) throws(NetifKeyError) -> T {
        guard let value = text(key) else { throw .missing(key: key) }
        guard let parsed = T(value, radix: 10), parsed >= 0 else { throw .malformed(key: key, value: value) }
        return parsed
    }

    /// A feature flag: "1" on, "0" off, absent `fallback`; Linux reads these with `%u`, so any other number
    /// counts as on, and text that is not a number is malformed.
    public func flag(_ key: String, default fallback: Bool = false) throws(NetifKeyError) -> Bool {
        guard text(key) != nil else { return fallback }
        return try number(key, default: UInt32(0)) != 0
    }
}

/// Renders a flag the way every netif peer writes it.
func netifFlag(_ on: Bool) -> String { on ? "1" : "0" }
