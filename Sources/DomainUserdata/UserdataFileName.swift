public import XenCore

/// The kind letter (`wh`) in a userdata file name.
///
/// libxl: the `wh` argument of `libxl__userdata_path` (`"d"`, `"n"`, `"l"`).
public enum UserdataFileKind: UInt8, Sendable, CaseIterable {
    /// `d`: the committed data.
    case data = 0x64
    /// `n`: the new value being written, renamed over `d` once complete.
    case new = 0x6E
    /// `l`: the per-domain lock file (userid `domain-userdata-lock`).
    case lock = 0x6C
}

/// One userdata file name, `userdata-<wh>.<domid>.<uuid>.<userid>`, formed and parsed byte-for-byte as libxl does.
/// Pure: no file system access.
///
/// libxl: `libxl__userdata_path` (`XEN_LIB_DIR "/userdata-%s.%u.%s.%s"`).
public struct UserdataFileName: Hashable, Sendable, CustomStringConvertible {
    /// The kind letter.
    public var kind: UserdataFileKind
    /// The domain id, printed with `%u`.
    public var domid: DomainID
    /// The domain's handle, printed with `LIBXL_UUID_FMT`.
    public var uuid: DomainUUID
    /// The userid tail (for lock files, `domain-userdata-lock`).
    public var userid: String

    /// A name for the given parts.
    ///
    /// libxl: `libxl__userdata_path` arguments.
    public init(kind: UserdataFileKind, domid: DomainID, uuid: DomainUUID, userid: String) {
        self.kind = kind
        self.domid = domid
        self.uuid = uuid
        self.userid = userid
    }

    /// The per-domain lock file's name.
    ///
    /// libxl: `libxl__userdata_path(gc, domid, "domain-userdata-lock", "l")`.
    public static func lock(domid: DomainID, uuid: DomainUUID) -> UserdataFileName {
        UserdataFileName(kind: .lock, domid: domid, uuid: uuid, userid: UserdataID.lockUserid)
    }

    /// The file name (no directory).
    ///
    /// libxl: the basename `libxl__userdata_path` formats.
    public var description: String {
        "userdata-\(Character(Unicode.Scalar(kind.rawValue))).\(domid.rawValue).\(uuid).\(userid)"
    }

    /// The full path under `root`.
    ///
    /// libxl: `libxl__userdata_path` with `XEN_LIB_DIR` replaced by `root`.
    public func path(in root: String) -> String {
        root.hasSuffix("/") ? root + description : root + "/" + description
    }

    /// Parses a directory entry; nil when it is not a userdata file of a kind libxl writes, or its domid/uuid
    /// are not in the canonical form libxl prints (such files are someone else's and are left alone).
    ///
    /// libxl: the inverse of `libxl__userdata_path` (libxl itself only globs).
    public init?(parsing name: String) {
        let bytes = Array(name.utf8)
        let prefix = Array("userdata-".utf8)
        // "userdata-" wh "." domid "." uuid(36) "." userid(>= 1)
        guard bytes.count >= prefix.count + 2 + 1 + 1 + 36 + 2, bytes.starts(with: prefix) else { return nil }
        guard let kind = UserdataFileKind(rawValue: bytes[prefix.count]) else { return nil }
        var index = prefix.count + 1
        guard bytes[index] == UInt8(ascii: ".") else { return nil }
        index += 1
        var value: UInt32 = 0
        let digitsStart = index
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
            value = value * 10 + UInt32(bytes[index] - UInt8(ascii: "0"))
            index += 1
            guard index - digitsStart <= 5 else { return nil }
        }
        let digits = index - digitsStart
        guard digits > 0, value <= UInt32(UInt16.max), digits == String(value).utf8.count else { return nil }
        guard index + 1 + 36 + 1 < bytes.count, bytes[index] == UInt8(ascii: ".") else { return nil }
        let uuidText = String(decoding: bytes[(index + 1)..<(index + 37)], as: UTF8.self)
        guard let uuid = DomainUUID(uuidText), uuid.description == uuidText else { return nil }
        index += 37
        guard bytes[index] == UInt8(ascii: ".") else { return nil }
        self.kind = kind
        self.domid = DomainID(UInt16(value))
        self.uuid = uuid
        self.userid = String(decoding: bytes[(index + 1)...], as: UTF8.self)
    }

    /// True when `name` matches libxl's destroy glob `userdata-?.<domid>.<uuid>.*` and is not the lock file
    /// (any name containing `domain-userdata-lock` is skipped, as libxl's `strstr` does).
    ///
    /// libxl: `libxl__userdata_destroyall` (glob pattern + `strstr(..., "domain-userdata-lock")`).
    public static func matchesDestroyPattern(_ name: [UInt8], domid: DomainID, uuid: DomainUUID) -> Bool {
        let prefix = Array("userdata-".utf8)
        let middle = Array(".\(domid.rawValue).\(uuid).".utf8)
        guard name.count >= prefix.count + 1 + middle.count, name.starts(with: prefix),
            name[(prefix.count + 1)...].starts(with: middle)
        else { return false }
        let lock = Array(UserdataID.lockUserid.utf8)
        guard name.count >= lock.count else { return true }
        for start in 0...(name.count - lock.count) where name[start..<(start + lock.count)].elementsEqual(lock) {
            return false
        }
        return true
    }
}
