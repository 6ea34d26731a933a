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

// MARK: - A plain pthread

/// Starts detached POSIX threads for blocking work (the cooperative pool must never block).
enum IOThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Runs `body` on a new detached thread; returns the error if the thread could not be created.
    static func spawn(_ body: @escaping @Sendable () -> Void) -> DescriptorError? {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { context in
                guard let context else { return nil }
                let box = Unmanaged<Box>.fromOpaque(context).takeRetainedValue()
                box.body()
                return nil
            }, box)
        guard status == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            return DescriptorError(operation: "pthread_create", errno: status)
        }
        pthread_detach(thread)
        return nil
    }
}
