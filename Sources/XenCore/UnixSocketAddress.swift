#if canImport(Glibc)
    package import Glibc
#elseif canImport(Musl)
    package import Musl
#endif

/// The address of a unix-domain socket: a `sockaddr_un` filled from a path once, checked to fit, for every
/// `bind` and `connect` of the package (clients, servers, the test runner and the tests).
///
/// OCaml: `Unix.ADDR_UNIX`
package struct UnixSocketAddress: Sendable {
    /// A path that cannot name a unix socket: longer than `sun_path` holds (with its NUL), or with a NUL inside.
    package struct InvalidPath: Error, Equatable, CustomStringConvertible {
        /// The path given.
        package let path: String
        /// What went wrong, with the path.
        package var description: String { "socket path too long or not a path: \(path)" }
    }

    private var address = sockaddr_un()

    /// The path's bytes, without the NUL.
    package let path: String

    /// The address of the socket at `path`; throws when the path and its NUL do not fit in `sun_path`.
    package init(path: String) throws(InvalidPath) {
        let bytes = Array(path.utf8)
        guard !bytes.contains(0), bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw InvalidPath(path: path)
        }
        self.path = path
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
    }

    /// Calls `body` with the address as a `sockaddr` and its length, as `bind`/`connect` take them.
    package func withSockaddr<R, E: Error>(
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R
    ) throws(E) -> R {
        var address = address
        return try withUnsafePointer(to: &address) { (pointer) throws(E) -> R in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(E) -> R in
                try body(raw, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// `connect(2)` of `descriptor` to this address: 0, or -1 with `errno` set.
    package func connect(_ descriptor: Int32) -> Int32 {
        withSockaddr { address, length in Glibc.connect(descriptor, address, length) }
    }

    /// `bind(2)` of `descriptor` to this address: 0, or -1 with `errno` set.
    package func bind(_ descriptor: Int32) -> Int32 {
        withSockaddr { address, length in Glibc.bind(descriptor, address, length) }
    }
}
