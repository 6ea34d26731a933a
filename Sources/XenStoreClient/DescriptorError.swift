import Glibc

/// A failed system call of a xenstore transport.
///
/// OCaml: `Unix.Unix_error`
public struct DescriptorError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The call that failed (`connect`, `send`, `read`, ...).
    public var operation: String
    /// Its errno.
    public var errno: Int32

    /// The error of `operation` with `errno`.
    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    /// `operation: strerror(errno)`.
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}
