import BlkifProtocol
import CXen
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Errors of the libxenstore-backed store.
struct LibxsError: Error, CustomStringConvertible {
    let description: String
}

/// The block components' xenstore seam (`XenbusStore`) over the C libxenstore and the real daemon, for the
/// block checks while our own client is not merged. Each call runs on a thread of its own.
final class LibxsBus: XenbusStore, @unchecked Sendable {
    // @unchecked: libxenstore handles are thread-safe (the library serialises requests on a mutex).
    private let handle: OpaquePointer

    init() throws {
        guard let handle = xs_open(LibXenstoreChecks.socketOnly) else {
            throw LibxsError(description: errnoText("xs_open"))
        }
        self.handle = handle
    }

    deinit { xs_close(handle) }

    func read(_ path: String) async throws -> String? {
        let result: Result<String?, LibxsError> = await blocking {
            var length: UInt32 = 0
            guard let raw = xs_read(self.handle, 0, path, &length) else {
                return errno == ENOENT ? .success(nil) : .failure(LibxsError(description: errnoText("read \(path)")))
            }
            defer { free(raw) }
            return .success(String(decoding: UnsafeRawBufferPointer(start: raw, count: Int(length)), as: UTF8.self))
        }
        return try result.get()
    }

    func write(_ pairs: [(path: String, value: String)]) async throws {
        let copied = pairs.map { [$0.path, $0.value] }
        let result: Result<Void, LibxsError> = await blocking {
            // All pairs in one transaction, retried while another writer conflicts (EAGAIN).
            for _ in 0..<100 {
                let tx = xs_transaction_start(self.handle)
                guard tx != 0 else { return .failure(LibxsError(description: errnoText("transaction_start"))) }
                for pair in copied {
                    let bytes = Array(pair[1].utf8)
                    guard xs_write(self.handle, tx, pair[0], bytes, UInt32(bytes.count)) else {
                        let failure = LibxsError(description: errnoText("write \(pair[0])"))
                        _ = xs_transaction_end(self.handle, tx, true)
                        return .failure(failure)
                    }
                }
                if xs_transaction_end(self.handle, tx, false) { return .success(()) }
                guard errno == EAGAIN else { return .failure(LibxsError(description: errnoText("commit"))) }
            }
            return .failure(LibxsError(description: "commit kept conflicting"))
        }
        try result.get()
    }

    func remove(_ path: String) async throws {
        let result: Result<Void, LibxsError> = await blocking {
            xs_rm(self.handle, 0, path) || errno == ENOENT
                ? .success(()) : .failure(LibxsError(description: errnoText("rm \(path)")))
        }
        try result.get()
    }

    func setPermissions(_ path: String, owner: DomainID, readers: [DomainID]) async throws {
        let result: Result<Void, LibxsError> = await blocking {
            var perms = [xs_permissions(id: UInt32(owner.rawValue), perms: UInt32(XS_PERM_NONE))]
            perms += readers.map { xs_permissions(id: UInt32($0.rawValue), perms: UInt32(XS_PERM_READ)) }
            return xs_set_permissions(self.handle, 0, path, &perms, UInt32(perms.count))
                ? .success(()) : .failure(LibxsError(description: errnoText("set_permissions \(path)")))
        }
        try result.get()
    }

    func wait<T: Sendable>(
        watching paths: [String], until check: @escaping @Sendable () async throws -> T?
    ) async throws -> T {
        // A connection of its own: its watch events are only ours.
        let watcher = try LibxsBus()
        for path in paths {
            let ok = await blocking { xs_watch(watcher.handle, path, "w") }
            guard ok else { throw LibxsError(description: errnoText("watch \(path)")) }
        }
        let fd = xs_fileno(watcher.handle)
        while true {
            if let value = try await check() { return value }
            try Task.checkCancellation()
            // Wait a bounded time so cancellation is seen; drain every queued event.
            _ = await blocking {
                guard Files.waitReadable(fd, milliseconds: 500) else { return false }
                var count: UInt32 = 0
                while let event = xs_check_watch(watcher.handle) {
                    free(event)
                    count += 1
                }
                return count > 0
            }
        }
    }
}
