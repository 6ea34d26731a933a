public import XenCore

/// Everything that can go wrong with per-domain userdata. libxl folds most of these into
/// `ERROR_FAIL`/`ERROR_NOMEM`/`ERROR_LOCK_FAIL` plus a log line; here each keeps its context (path, errno, op).
///
/// libxl: the `ERROR_*` codes returned by `libxl_userdata_store/retrieve/unlink`.
public enum UserdataError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The userid is not a short printable ASCII string without `/`.
    case invalidUserid(String, reason: String)
    /// The userid is the lock file's reserved name (or contains it, so destroy would never collect it).
    case reservedUserid(String)
    /// The domain does not exist (libxl: `libxl__userdata_path` returns NULL, "unable to find domain info").
    case noSuchDomain(DomainID)
    /// The domain went away (or its domid was reused by another UUID) while we waited for the lock
    /// (libxl: `ERROR_LOCK_FAIL` after the post-lock existence check).
    case domainVanished(DomainID)
    /// Opening, locking or checking the lock file failed (libxl: `ERROR_LOCK_FAIL`).
    case lockFailed(path: String, op: String, errno: Int32)
    /// The data file exists but is empty (libxl: `ERROR_FAIL`, "userdata file %s is empty").
    case emptyFile(path: String)
    /// `unlink` found no data file (libxl: `ERROR_FAIL`, "userdata file %s unlink failed" / ENOENT).
    case notFound(path: String)
    /// The value does not fit libxl's `int datalen`.
    case tooLarge(count: Int)
    /// A system call on a userdata file failed (libxl: `ERROR_FAIL` with `LOGE`).
    case io(op: String, path: String, errno: Int32)
    /// The hypervisor control interface cannot be opened (no Xen here, or not privileged).
    case hypervisorUnavailable(errno: Int32)
    /// Asking the hypervisor about a domain failed for a reason other than "no such domain".
    case domainInfoFailed(DomainID, errno: Int32)

    /// The message libxl would log for the same failure, with the context.
    ///
    /// libxl: the `LOG`/`LOGE` lines of the userdata functions.
    public var description: String {
        switch self {
        case .invalidUserid(let userid, let reason): "invalid userdata userid \(userid.debugDescription): \(reason)"
        case .reservedUserid(let userid): "userdata userid \(userid.debugDescription) is reserved for the lock"
        case .noSuchDomain(let domid): "unable to find domain info for domain \(domid)"
        case .domainVanished(let domid): "domain \(domid) disappeared while taking the userdata lock"
        case .lockFailed(let path, let op, let errno): "cannot \(op) lockfile \(path), errno=\(errno)"
        case .emptyFile(let path): "userdata file \(path) is empty"
        case .notFound(let path): "userdata file \(path) does not exist"
        case .tooLarge(let count): "userdata of \(count) bytes exceeds libxl's int datalen"
        case .io(let op, let path, let errno): "\(op) failed for \(path), errno=\(errno)"
        case .hypervisorUnavailable(let errno): "cannot open the Xen control interface, errno=\(errno)"
        case .domainInfoFailed(let domid, let errno): "getting domain info for domain \(domid) failed, errno=\(errno)"
        }
    }
}
