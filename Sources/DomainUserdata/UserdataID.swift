/// A userdata userid: the self-declared name of the libxl user that owns a value. libxl.h documents it as
/// "a short printable ASCII string"; it becomes the tail of a file name, so `/` is refused too.
///
/// libxl: the `const char *userdata_userid` argument and the registry comment in `libxl.h`.
public struct UserdataID: Hashable, Sendable, CustomStringConvertible {
    /// The longest userid accepted: keeps `userdata-d.<domid>.<uuid>.<userid>` well inside NAME_MAX (255).
    public static let maximumLength = 128

    /// The validated text.
    public let rawValue: String

    /// Validates `text`: 1...128 bytes of printable ASCII (0x21–0x7E, no space) without `/`.
    ///
    /// libxl: not validated there (the caller's string goes straight into the path); SwiftXen refuses what would
    /// escape the directory or make an unprintable file name.
    public init(validating text: String) throws(UserdataError) {
        let utf8 = text.utf8
        guard !utf8.isEmpty else { throw .invalidUserid(text, reason: "empty") }
        guard utf8.count <= Self.maximumLength else {
            throw .invalidUserid(text, reason: "longer than \(Self.maximumLength) bytes")
        }
        for byte in utf8 {
            guard byte >= 0x21, byte <= 0x7E else {
                throw .invalidUserid(text, reason: "not printable ASCII")
            }
            guard byte != UInt8(ascii: "/") else { throw .invalidUserid(text, reason: "contains '/'") }
        }
        self.rawValue = text
    }

    private init(registered text: String) { self.rawValue = text }

    /// The userid as it appears in file names.
    ///
    /// libxl: the `userdata_userid` string.
    public var description: String { rawValue }

    /// True for the lock's name (and any userid containing it): libxl's destroy path skips such files, so data
    /// stored under them would outlive the domain.
    public var isReserved: Bool { rawValue.utf8.contains(subsequence: Self.lockUserid.utf8) }

    // MARK: - The libxl.h registry

    /// `"xl"`: the domain config file in xl format, Unix line endings (`xl config-update`, read on reboot).
    ///
    /// libxl: registry entry `"xl"` in `libxl.h`.
    public static let xl = UserdataID(registered: "xl")
    /// `"libxl-json"`: the `libxl_domain_config` as JSON, including the trailing NUL.
    ///
    /// libxl: registry entry `"libxl-json"` (`libxl__set_domain_configuration`).
    public static let libxlJSON = UserdataID(registered: "libxl-json")
    /// `"libvirt-xml"`: libvirt's domain XML.
    ///
    /// libxl: registry entry `"libvirt-xml"` in `libxl.h`.
    public static let libvirtXML = UserdataID(registered: "libvirt-xml")
    /// `"domain-userdata-lock"`: the per-domain lock file (kind `l`); reserved, never stored as data.
    ///
    /// libxl: registry entry `"domain-userdata-lock"` (`libxl__lock_domain_userdata`).
    public static let domainUserdataLock = UserdataID(registered: lockUserid)

    static let lockUserid = "domain-userdata-lock"
}

extension Sequence where Element: Equatable {
    fileprivate func contains(subsequence needle: some Collection<Element>) -> Bool {
        let haystack = Array(self)
        let needle = Array(needle)
        guard needle.count <= haystack.count else { return false }
        if needle.isEmpty { return true }
        for start in 0...(haystack.count - needle.count)
        where haystack[start..<start + needle.count].elementsEqual(needle) {
            return true
        }
        return false
    }
}
