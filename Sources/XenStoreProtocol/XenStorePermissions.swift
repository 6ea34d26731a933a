public import XenCore

/// What a domain may do with a node: the letter of a permission entry.
///
/// OCaml: `Xs_protocol.ACL.perm` (`NONE`, `READ`, `WRITE`, `RDWR`)
public enum XenStoreAccess: UInt8, Hashable, Sendable, CaseIterable {
    /// `n`: nothing.
    case none = 0x6E
    /// `r`: read only.
    case read = 0x72
    /// `w`: write only.
    case write = 0x77
    /// `b`: read and write.
    case both = 0x62

    /// True for `r` and `b`.
    public var canRead: Bool { self == .read || self == .both }
    /// True for `w` and `b`.
    public var canWrite: Bool { self == .write || self == .both }

    /// The letter on the wire. OCaml: `Xs_protocol.ACL.char_of_perm`
    public var letter: Character { Character(Unicode.Scalar(rawValue)) }
}

/// One `<letter><domid>` permission entry.
///
/// OCaml: an element of `Xs_protocol.ACL.t.acl` (`domid * perm`)
public struct XenStorePermission: Hashable, Sendable, CustomStringConvertible {
    /// The domain the entry is about.
    public var domain: DomainID
    /// What it may do.
    public var access: XenStoreAccess

    /// An entry. OCaml: `(domid, perm)`
    public init(_ access: XenStoreAccess, _ domain: DomainID) {
        self.domain = domain
        self.access = access
    }

    /// Parses `b0`, `r5`, `n0x10` (the number as libxenstore's `strtol(..., 0)` reads it); nil if malformed.
    ///
    /// OCaml: `Xs_protocol.ACL.of_string` (one entry)
    public init?(_ text: some StringProtocol) {
        guard let first = text.utf8.first, let access = XenStoreAccess(rawValue: first) else { return nil }
        let number = text.dropFirst()
        let value: UInt32?
        if number.hasPrefix("0x") || number.hasPrefix("0X") {
            value = UInt32(number.dropFirst(2), radix: 16)
        } else if number.count > 1 && number.hasPrefix("0") {
            value = UInt32(number.dropFirst(), radix: 8)
        } else {
            value = UInt32(number, radix: 10)
        }
        guard let value, let domid = UInt16(exactly: value) else { return nil }
        self.init(access, DomainID(domid))
    }

    /// `<letter><decimal domid>`. OCaml: `Xs_protocol.ACL.to_string` (one entry)
    public var description: String { "\(access.letter)\(domain.rawValue)" }
}

/// A node's permissions: the owner (who always has full access), the access of everybody else, and
/// per-domain overrides. On the wire the owner entry comes first and its letter is the default for others.
///
/// OCaml: `Xs_protocol.ACL.t` (`{owner; other; acl}`)
public struct XenStorePermissions: Hashable, Sendable, CustomStringConvertible {
    /// The owning domain.
    public var owner: DomainID
    /// Access for domains not listed in `acl`.
    public var others: XenStoreAccess
    /// Per-domain overrides, in wire order.
    public var acl: [XenStorePermission]

    /// Permissions from their parts. OCaml: `{ Xs_protocol.ACL.owner; other; acl }`
    public init(owner: DomainID, others: XenStoreAccess = .none, acl: [XenStorePermission] = []) {
        self.owner = owner
        self.others = others
        self.acl = acl
    }

    /// Permissions from wire entries (first = owner); nil for an empty list.
    ///
    /// OCaml: none (the record is built by `ACL.of_string`)
    public init?(entries: [XenStorePermission]) {
        guard let first = entries.first else { return nil }
        self.init(owner: first.domain, others: first.access, acl: Array(entries.dropFirst()))
    }

    /// Parses the NUL-separated strings of a `GET_PERMS` reply / `SET_PERMS` request; nil if any is malformed
    /// or there is none.
    ///
    /// OCaml: `Xs_protocol.ACL.of_string`
    public init?(strings: [some StringProtocol]) {
        var entries: [XenStorePermission] = []
        for text in strings {
            guard let entry = XenStorePermission(text) else { return nil }
            entries.append(entry)
        }
        self.init(entries: entries)
    }

    /// The wire entries, owner first.
    public var entries: [XenStorePermission] { [XenStorePermission(others, owner)] + acl }

    /// The wire strings (`["r5", "w2", "b3"]`). OCaml: `Xs_protocol.ACL.to_string`
    public var strings: [String] { entries.map(\.description) }

    /// What `domain` may do, ignoring privilege: the owner may do everything, a listed domain gets its entry
    /// (the first one if listed twice), everybody else `others`. xenstored applies this after checking for
    /// privileged callers.
    ///
    /// OCaml: none (oxenstored `Perms.check`, C `perm_for_conn`)
    public func access(for domain: DomainID) -> XenStoreAccess {
        if domain == owner { return .both }
        for entry in acl where entry.domain == domain { return entry.access }
        return others
    }

    /// The entries separated by commas, e.g. `r5,w2,b3`.
    public var description: String { strings.joined(separator: ",") }
}
