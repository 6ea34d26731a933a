import Glibc
public import XenCore

/// libxl's per-domain userdata: opaque byte strings kept in files next to the domain, one per userid, living as
/// long as the domain. The on-disk format is libxl's, so `xl` and SwiftXen share one directory.
///
/// Every operation takes the per-domain `flock` lock as libxl does. Stores are crash-safe: the value is written
/// to the `n` file, fsynced, renamed over the `d` file and the directory fsynced, so a reader (or a crash at any
/// point) sees either the old value or the new one, never a torn one.
///
/// All methods block (file IO, and `flock` waits for other holders); call them from a thread, or use the async
/// forms, which run them off the cooperative pool.
///
/// libxl: `libxl_userdata_store`, `libxl_userdata_retrieve`, `libxl_userdata_unlink` (libxl_dom.c).
public struct UserdataStore: Sendable {
    /// libxl's directory, `XEN_LIB_DIR` (`$localstatedir/lib/xen`).
    ///
    /// libxl: `XEN_LIB_DIR` (`_paths.h`).
    public static let defaultRoot = "/var/lib/xen"

    /// The directory holding the userdata files.
    public let root: String
    /// Where domain existence and UUIDs come from.
    public let domains: any DomainDirectory

    /// A store over `root` (default `/var/lib/xen`) asking `domains` about domains.
    ///
    /// libxl: a `libxl_ctx` (its `xch` answers `libxl_domain_info`).
    public init(root: String = UserdataStore.defaultRoot, domains: any DomainDirectory) {
        self.root = root
        self.domains = domains
    }

    // MARK: - Public operations

    /// Stores `data` as `userid`'s value for `domid`; empty `data` deletes the value (libxl's `datalen == 0`),
    /// which fails with `.notFound` when there was none, as libxl's unlink does.
    ///
    /// libxl: `libxl_userdata_store` → `libxl__userdata_store`.
    public func store(domid: DomainID, userid: UserdataID, data: [UInt8]) throws(UserdataError) {
        try checkNotReserved(userid)
        guard data.count <= Int(Int32.max) else { throw .tooLarge(count: data.count) }
        try withDomainLock(domid: domid) { (uuid) throws(UserdataError) in
            let file = UserdataFileName(kind: .data, domid: domid, uuid: uuid, userid: userid.rawValue).path(in: root)
            if data.isEmpty {
                try removeDataFile(file)
                return
            }
            let new = UserdataFileName(kind: .new, domid: domid, uuid: uuid, userid: userid.rawValue).path(in: root)
            // libxl's flags and mode; O_NOFOLLOW only refuses a symlink planted in place of the temp file.
            let fd = try PosixFile.open(new, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600, op: "open")
            do throws(UserdataError) {
                try PosixFile.writeAll(fd, data, path: new)
                try PosixFile.fsync(fd, path: new)
            } catch {
                // A failed store (ENOSPC, EIO) leaves the old value and no half-written temp file behind.
                _ = Glibc.close(fd)
                _ = PosixFile.unlink(new)
                throw error
            }
            do throws(UserdataError) {
                try PosixFile.close(fd, path: new)
                try PosixFile.rename(new, file)
            } catch {
                _ = PosixFile.unlink(new)
                throw error
            }
            try PosixFile.fsyncDirectory(root)
        }
    }

    /// The value `userid` stored for `domid`, or nil when there is none. An existing empty file is an error
    /// (libxl never writes one: storing nothing deletes).
    ///
    /// libxl: `libxl_userdata_retrieve` → `libxl__userdata_retrieve` (ENOENT → no data; empty → `ERROR_FAIL`).
    public func retrieve(domid: DomainID, userid: UserdataID) throws(UserdataError) -> [UInt8]? {
        try checkNotReserved(userid)
        return try withDomainLock(domid: domid) { (uuid) throws(UserdataError) -> [UInt8]? in
            let file = UserdataFileName(kind: .data, domid: domid, uuid: uuid, userid: userid.rawValue).path(in: root)
            guard let data = try PosixFile.readAll(file) else { return nil }
            guard !data.isEmpty else { throw .emptyFile(path: file) }
            return data
        }
    }

    /// Deletes `userid`'s value for `domid`; `.notFound` when there is none, as libxl.
    ///
    /// libxl: `libxl_userdata_unlink`.
    public func unlink(domid: DomainID, userid: UserdataID) throws(UserdataError) {
        try checkNotReserved(userid)
        try withDomainLock(domid: domid) { (uuid) throws(UserdataError) in
            let file = UserdataFileName(kind: .data, domid: domid, uuid: uuid, userid: userid.rawValue).path(in: root)
            try removeDataFile(file)
        }
    }

    /// Removes every userdata file of the domain `domid` with handle `uuid` (data, and `n` files a crash left),
    /// except the lock file, under the domain's lock. Works after the domain is gone: the UUID is given, not
    /// looked up. Returns the names removed.
    ///
    /// libxl: the destroy path (`devices_destroy_cb`: lock, `libxl__userdata_destroyall`, unlock).
    @discardableResult
    public func destroyAll(domid: DomainID, uuid: DomainUUID) throws(UserdataError) -> [String] {
        let lock = try UserdataLock(path: UserdataFileName.lock(domid: domid, uuid: uuid).path(in: root))
        let outcome = Result { () throws(UserdataError) -> [String] in
            var removed: [String] = []
            for name in try PosixFile.listDirectory(root)
            where UserdataFileName.matchesDestroyPattern(name, domid: domid, uuid: uuid) {
                let text = String(decoding: name, as: UTF8.self)
                // libxl logs and carries on when one unlink fails (say, a directory GLOB_MARK'd); so do we.
                if PosixFile.unlink(root.hasSuffix("/") ? root + text : root + "/" + text) == 0 {
                    removed.append(text)
                }
            }
            try PosixFile.fsyncDirectory(root)
            return removed
        }
        lock.unlock()
        return try outcome.get()
    }

    /// Runs `body` holding `domid`'s userdata lock, passing the domain's UUID. Fails with `.noSuchDomain` when the
    /// domain does not exist, and `.domainVanished` when it went away (or its domid was reused) while waiting.
    ///
    /// libxl: `libxl__lock_domain_userdata` (path via `libxl_domain_info`, `libxl__lock_file`, re-check).
    public func withDomainLock<Value>(
        domid: DomainID, _ body: (DomainUUID) throws(UserdataError) -> Value
    ) throws(UserdataError) -> Value {
        guard let uuid = try domains.uuid(of: domid) else { throw .noSuchDomain(domid) }
        let lock = try UserdataLock(path: UserdataFileName.lock(domid: domid, uuid: uuid).path(in: root))
        // Same uuid, not just "some domain": a domid reused by a new domain must never see old data.
        guard try domains.uuid(of: domid) == uuid else {
            lock.unlock()
            throw .domainVanished(domid)
        }
        let outcome = Result { () throws(UserdataError) -> Value in try body(uuid) }
        lock.unlock()
        return try outcome.get()
    }

    // MARK: - Helpers

    private func checkNotReserved(_ userid: UserdataID) throws(UserdataError) {
        if userid.isReserved { throw .reservedUserid(userid.rawValue) }
    }

    private func removeDataFile(_ file: String) throws(UserdataError) {
        let code = PosixFile.unlink(file)
        if code == ENOENT { throw .notFound(path: file) }
        if code != 0 { throw .io(op: "unlink", path: file, errno: code) }
        try PosixFile.fsyncDirectory(root)
    }
}
