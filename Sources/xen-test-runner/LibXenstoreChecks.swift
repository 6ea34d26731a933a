import CXen

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The C peer, libxenstore, against the real daemon over both transports. These prove the harness (the
/// daemon is up and reachable both ways) and pin down the daemon behaviour our own client is compared with.
enum LibXenstoreChecks {
    /// `XS_OPEN_SOCKETONLY` from xenstore.h (a shifted macro Swift does not import).
    static let socketOnly: UInt = 1 << 1
    /// `XBT_NULL`: no transaction.
    static let noTransaction: xs_transaction_t = 0

    /// A libxenstore connection over the unix socket or over /dev/xen/xenbus.
    enum Transport: String, CaseIterable {
        case socket
        case xenbus

        func open() throws(CheckFailure) -> OpaquePointer {
            let before = Files.openDescriptorTargets()
            let handle: OpaquePointer?
            switch self {
            case .socket:
                handle = xs_open(LibXenstoreChecks.socketOnly)
            case .xenbus:
                // libxenstore opens XENSTORED_PATH when set; a character device there means the kernel's
                // xenbus driver, which forwards to xenstored over the shared ring.
                setenv("XENSTORED_PATH", "/dev/xen/xenbus", 1)
                handle = xs_open(0)
                unsetenv("XENSTORED_PATH")
            }
            guard let handle else { throw CheckFailure(errnoText("xs_open over \(rawValue)")) }
            // xs_fileno is a watch pipe, not the connection: find the new descriptor via /proc/self/fd.
            let added = Files.openDescriptorTargets().subtracting(before)
            let connected =
                self == .xenbus
                ? added.contains { $0.hasSuffix("/dev/xen/xenbus") }
                : added.contains { $0.contains("-> socket:") }
            if !connected {
                xs_close(handle)
                throw CheckFailure("xs_open over \(rawValue) connected elsewhere: \(added.sorted())")
            }
            return handle
        }
    }

    static func run(_ report: Report) {
        for transport in Transport.allCases {
            let base = "/xt/libxs/\(transport.rawValue)"
            report.check("libxenstore[\(transport.rawValue)]: write, read, directory, rm") {
                let xs = try transport.open()
                defer { xs_close(xs) }
                try write(xs, "\(base)/a", "hello")
                try require(try read(xs, "\(base)/a") == "hello", "read back differs")
                var count: UInt32 = 0
                let entries = xs_directory(xs, noTransaction, base, &count)
                defer { free(entries) }
                try require(entries != nil && count == 1, errnoText("directory \(base) has \(count) entries"))
                try require(xs_rm(xs, noTransaction, base), errnoText("rm \(base)"))
                try require(xs_read(xs, noTransaction, "\(base)/a", nil) == nil && errno == ENOENT, "still there")
            }
            report.check("libxenstore[\(transport.rawValue)]: conflicting transactions give EAGAIN") {
                let first = try transport.open()
                defer { xs_close(first) }
                let second = try transport.open()
                defer { xs_close(second) }
                try write(first, "\(base)/tx", "0")
                let tx = xs_transaction_start(first)
                try require(tx != 0, errnoText("transaction_start"))
                _ = xs_read(first, tx, "\(base)/tx", nil).map { free($0) }
                try write(second, "\(base)/tx", "outside")
                try require(xs_write(first, tx, "\(base)/tx", "inside", 6), errnoText("write in transaction"))
                let committed = xs_transaction_end(first, tx, false)
                try require(!committed && errno == EAGAIN, errnoText("commit succeeded=\(committed)"))
                try require(try read(first, "\(base)/tx") == "outside", "conflicting write leaked")
            }
            report.check("libxenstore[\(transport.rawValue)]: watch fires on write") {
                let xs = try transport.open()
                defer { xs_close(xs) }
                try require(xs_watch(xs, "\(base)/w", "tok"), errnoText("watch"))
                try expectEvent(xs, path: "\(base)/w", token: "tok")  // the initial event
                try write(xs, "\(base)/w/child", "1")
                try expectEvent(xs, path: "\(base)/w/child", token: "tok")
                try require(xs_unwatch(xs, "\(base)/w", "tok"), errnoText("unwatch"))
            }
        }
        report.check("libxenstore: domain 0 path, introduced, name") {
            let xs = try Transport.socket.open()
            defer { xs_close(xs) }
            let path = try unwrap(xs_get_domain_path(xs, 0), errnoText("get_domain_path"))
            defer { free(path) }
            try require(String(cString: path) == "/local/domain/0", "path \(String(cString: path))")
            try require(xs_is_domain_introduced(xs, 0), "domain 0 not introduced")
            try require(try read(xs, "/local/domain/0/name") == "Domain-0", "xen-init-dom0 did not run")
        }
    }

    // MARK: - Helpers

    static func write(_ xs: OpaquePointer, _ path: String, _ value: String) throws(CheckFailure) {
        let bytes = Array(value.utf8)
        try require(xs_write(xs, noTransaction, path, bytes, UInt32(bytes.count)), errnoText("write \(path)"))
    }

    static func read(_ xs: OpaquePointer, _ path: String) throws(CheckFailure) -> String {
        var length: UInt32 = 0
        let raw = try unwrap(xs_read(xs, noTransaction, path, &length), errnoText("read \(path)"))
        defer { free(raw) }
        return String(decoding: UnsafeRawBufferPointer(start: raw, count: Int(length)), as: UTF8.self)
    }

    static func expectEvent(_ xs: OpaquePointer, path: String, token: String) throws(CheckFailure) {
        try require(Files.waitReadable(xs_fileno(xs), milliseconds: 10_000), "no watch event for \(path)")
        var count: UInt32 = 0
        let event = try unwrap(xs_read_watch(xs, &count), errnoText("read_watch"))
        defer { free(event) }
        let gotPath = event[Int(XS_WATCH_PATH.rawValue)].map { String(cString: $0) }
        let gotToken = event[Int(XS_WATCH_TOKEN.rawValue)].map { String(cString: $0) }
        try require(gotPath == path && gotToken == token, "event \(gotPath ?? "?") \(gotToken ?? "?")")
    }
}
