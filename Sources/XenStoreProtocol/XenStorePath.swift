public import XenCore

/// Path rules of xenstored: which strings name a node, how relative paths resolve, the domain home paths.
///
/// OCaml: `Xs_protocol` has none of this; the rules are C xenstored's `is_valid_nodename` and `canonicalize`
/// (4.17 `xenstored_core.c`) and oxenstored's `Store.Path`.
public enum XenStorePath {
    /// The parent of every domain's home: `/local/domain`.
    public static let domainsRoot = "/local/domain"

    /// A domain's home, `/local/domain/<domid>`, which relative paths of that domain are relative to.
    ///
    /// OCaml: `Xs_protocol.Request.Getdomainpath` reply as built by xenstored
    public static func domainPath(of domain: DomainID) -> String { "\(domainsRoot)/\(domain.rawValue)" }

    /// True for the special watch paths `@introduceDomain` and `@releaseDomain` (and anything under them).
    public static func isSpecial(_ path: String) -> Bool { path.utf8.first == UInt8(ascii: "@") }

    /// True if `path` does not start with `/` or `@`.
    public static func isRelative(_ path: String) -> Bool {
        guard let first = path.utf8.first else { return true }
        return first != UInt8(ascii: "/") && first != UInt8(ascii: "@")
    }

    /// Turns a path as a domain sent it into an absolute one (relative paths hang below the domain's home)
    /// and checks it, as xenstored does before every path operation. `allowSpecial` admits `@...` paths
    /// (only watches may use them).
    ///
    /// OCaml: none (C xenstored `canonicalize` + `is_valid_nodename`)
    public static func canonicalize(
        _ path: String, for domain: DomainID, allowSpecial: Bool = false
    ) throws(XenStoreProtocolError) -> String {
        if path.isEmpty { throw .invalidPath(path: path, reason: "empty") }
        if isSpecial(path) {
            guard allowSpecial else { throw .invalidPath(path: path, reason: "special path outside a watch") }
            guard path.utf8.count <= XenStoreLimits.absolutePathMax, hasValidCharacters(path) else {
                throw .invalidPath(path: path, reason: "bad special path")
            }
            return path
        }
        if isRelative(path) {
            guard path.utf8.count <= XenStoreLimits.relativePathMax else {
                throw .invalidPath(path: path, reason: "relative path longer than \(XenStoreLimits.relativePathMax)")
            }
            let absolute = domainPath(of: domain) + "/" + path
            try validateAbsolute(absolute)
            return absolute
        }
        try validateAbsolute(path)
        return path
    }

    /// Checks an absolute path: starts with `/`, no trailing `/` (except the root), no `//`, only
    /// `[A-Za-z0-9-/_@]`, at most 3072 bytes, and at most 2048 below `/local/domain/<domid>/`.
    ///
    /// OCaml: none (C xenstored `is_valid_nodename`)
    public static func validateAbsolute(_ path: String) throws(XenStoreProtocolError) {
        // Walks the UTF-8 view once, without allocating: this runs for every request.
        let bytes = path.utf8
        guard bytes.first == UInt8(ascii: "/") else { throw .invalidPath(path: path, reason: "not absolute") }
        let count = bytes.count
        if count > 1 && bytes.last == UInt8(ascii: "/") {
            throw .invalidPath(path: path, reason: "trailing /")
        }
        guard count <= XenStoreLimits.absolutePathMax else {
            throw .invalidPath(path: path, reason: "longer than \(XenStoreLimits.absolutePathMax)")
        }
        // Over the contiguous bytes (native strings always have them), not the view's index machinery.
        let problem = bytes.withContiguousStorageIfAvailable(firstProblem) ?? firstProblem(Array(bytes))
        if let problem { throw .invalidPath(path: path, reason: problem) }
        if count > XenStoreLimits.relativePathMax, let below = pathBelowDomainHome(path),
            below > XenStoreLimits.relativePathMax
        {
            throw .invalidPath(
                path: path, reason: "longer than \(XenStoreLimits.relativePathMax) below the domain home")
        }
    }

    /// The parent of an absolute path (`/a/b` → `/a`, `/a` → `/`); nil for `/`.
    public static func parent(of path: String) -> String? {
        guard path != "/" else { return nil }
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return nil }
        if slash == path.utf8.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// The last component of an absolute path (`/a/b` → `b`, `/` → ``).
    public static func basename(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }

    /// `child` below `parent` (`/` + `a` → `/a`, `/x` + `a` → `/x/a`).
    public static func join(_ parent: String, _ child: String) -> String {
        parent == "/" ? "/" + child : parent + "/" + child
    }

    /// True if `path` is `ancestor` or lies below it.
    public static func isAtOrBelow(_ path: String, _ ancestor: String) -> Bool {
        if ancestor == "/" { return path.utf8.first == UInt8(ascii: "/") }
        guard path.hasPrefix(ancestor) else { return false }
        let rest = path.utf8.dropFirst(ancestor.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }

    // MARK: - Characters

    /// What is wrong with a path's characters: an empty component (`//`) or a forbidden character; nil if
    /// nothing.
    private static func firstProblem(_ bytes: some Collection<UInt8>) -> String? {
        var previousSlash = false
        for byte in bytes {
            let slash = byte == UInt8(ascii: "/")
            if slash && previousSlash { return "empty component (//)" }
            previousSlash = slash
            guard isAllowed(byte) else { return "forbidden character" }
        }
        return nil
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "_"), UInt8(ascii: "@"): true
        default: false
        }
    }

    private static func hasValidCharacters(_ path: String) -> Bool { path.utf8.allSatisfy(isAllowed) }

    /// Bytes after `/local/domain/<up to 5 digits>/`, as C xenstored's `sscanf("/local/domain/%5u/%n")`.
    private static func pathBelowDomainHome(_ path: String) -> Int? {
        let prefix = "/local/domain/"
        guard path.hasPrefix(prefix) else { return nil }
        let rest = path.utf8.dropFirst(prefix.utf8.count)
        let digits = rest.prefix(5).prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }.count
        let afterDigits = rest.dropFirst(digits)
        guard digits > 0, afterDigits.first == UInt8(ascii: "/") else { return nil }
        return afterDigits.count - 1
    }
}
