import Glibc

/// The per-domain userdata lock: an exclusive `flock` on `userdata-l.<domid>.<uuid>.domain-userdata-lock`,
/// taken exactly as libxl takes it, so SwiftXen and `xl` exclude each other. Released on `unlock()` or
/// when dropped; a process that dies holding it releases it with its descriptor.
///
/// libxl: `libxl__domain_userdata_lock` / `libxl__lock_domain_userdata` / `libxl__unlock_domain_userdata`.
public struct UserdataLock: ~Copyable {
    /// The lock file's path.
    public let path: String
    private let fd: Int32

    /// Opens and locks `path`: open O_RDWR|O_CREAT 0666, `flock(LOCK_EX)` retrying EINTR, then checks that the
    /// locked descriptor is still the file at `path` (same dev+ino). A previous holder unlinks the file before
    /// closing it, so a waiter may have locked an orphaned inode: then it closes and starts over.
    ///
    /// libxl: `libxl__lock_file` (the loop inside `libxl__lock_domain_userdata`).
    public init(path: String) throws(UserdataError) {
        while true {
            let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
            if fd < 0 {
                if errno == EINTR { continue }
                throw .lockFailed(path: path, op: "open", errno: errno)
            }
            while flock(fd, LOCK_EX) != 0 {
                let code = errno
                if code == EINTR { continue }
                _ = Glibc.close(fd)
                throw .lockFailed(path: path, op: "lock", errno: code)
            }
            var opened = stat()
            if fstat(fd, &opened) != 0 {
                let code = errno
                _ = Glibc.close(fd)
                throw .lockFailed(path: path, op: "fstat", errno: code)
            }
            var named = stat()
            if stat(path, &named) != 0 {
                let code = errno
                if code != ENOENT {
                    _ = Glibc.close(fd)
                    throw .lockFailed(path: path, op: "stat", errno: code)
                }
            } else if named.st_dev == opened.st_dev, named.st_ino == opened.st_ino {
                self.path = path
                self.fd = fd
                return
            }
            // Locked a file that was unlinked (or replaced) meanwhile: drop it and retry.
            _ = Glibc.close(fd)
        }
    }

    /// Releases the lock: unlinks the lock file *before* closing, so the next holder re-creates it.
    ///
    /// libxl: `libxl__unlock_file` (unlink, then close the carefd).
    public consuming func unlock() {
        // deinit does the work; consuming ends the lifetime here.
    }

    deinit {
        _ = Glibc.unlink(path)
        _ = Glibc.close(fd)
    }
}
