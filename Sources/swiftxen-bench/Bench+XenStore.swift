import CXen
import Glibc
import Synchronization
import XenStoreClient
import XenStoreServer

// Reads per second on one connection to one XenStoreServer unix socket, in one process run: SwiftXen's
// multiplexing client with 1 and 64 requests in flight against libxenstore (`xs_read` in a loop through
// CXen, the way every C toolstack reads) from 1 and 8 threads. libxenstore serialises its requests behind
// a mutex and makes blocking calls, so its loops run on plain threads, never on the cooperative pool.
enum XenStoreBench {
    static let seconds = 2.0
    static let key = "/bench/key"

    static func run() async throws {
        let directory = "/tmp/swiftxen-bench-\(getpid())"
        mkdir(directory, 0o700)
        let socketPath = directory + "/socket"
        let server = XenStoreServer()
        let listener = try await server.listen(unixSocketPath: socketPath)
        defer {
            unlink(socketPath)
            rmdir(directory)
        }
        let seeding = try await XenStoreClient.connect(socketPath: socketPath)
        try await seeding.immediate { h throws(XenStoreError) in try await h.write(key, "bench-value") }
        await seeding.close()

        let swift1 = try await swiftRate(socketPath: socketPath, inFlight: 1)
        let swift64 = try await swiftRate(socketPath: socketPath, inFlight: 64)
        let c1 = try libxenstoreRate(socketPath: socketPath, threads: 1)
        let c8 = try libxenstoreRate(socketPath: socketPath, threads: 8)
        await listener.close()

        func show(_ name: String, _ rate: Double) {
            let pad = String(repeating: " ", count: max(0, 34 - name.count))
            print("   \(name)\(pad) \(Int(rate)) reads/s")
        }
        show("SwiftXen, 1 in flight", swift1)
        show("SwiftXen, 64 in flight", swift64)
        show("libxenstore xs_read, 1 thread", c1)
        show("libxenstore xs_read, 8 threads", c8)
        let bestC = max(c1, c8)
        print("   ratio 1 in flight / libxenstore 1 thread:    \(format(swift1 / c1))x (goal >= 0.9x)")
        print("   ratio 64 in flight / best libxenstore:       \(format(swift64 / bestC))x (goal >= 10x)")
    }

    static func format(_ value: Double) -> String {
        let scaled = (value * 100).rounded() / 100
        return String(scaled)
    }

    // MARK: - SwiftXen

    static func swiftRate(socketPath: String, inFlight: Int) async throws -> Double {
        let client = try await XenStoreClient.connect(socketPath: socketPath)
        defer { Task { await client.close() } }
        // Warm up the connection and the server.
        for _ in 0..<200 { _ = try await client.immediate { h throws(XenStoreError) in try await h.readBytes(key) } }
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<inFlight {
                group.addTask {
                    var count = 0
                    while clock.now < deadline {
                        for _ in 0..<16 {
                            _ = try await client.immediate { h throws(XenStoreError) in try await h.readBytes(key) }
                        }
                        count += 16
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = start.duration(to: clock.now)
        return Double(total) / seconds(elapsed)
    }

    static func seconds(_ duration: Duration) -> Double {
        let (whole, atto) = duration.components
        return Double(whole) + Double(atto) / 1e18
    }

    // MARK: - libxenstore

    struct BenchError: Error, CustomStringConvertible {
        var description: String
    }

    /// `xs_open` on the socket (via `XENSTORED_PATH`, as libxenstore reads it), then `threads` plain threads
    /// sharing that one handle call `xs_read` until the deadline.
    static func libxenstoreRate(socketPath: String, threads: Int) throws -> Double {
        setenv("XENSTORED_PATH", socketPath, 1)
        guard let handle = xs_open(0) else { throw BenchError(description: "xs_open failed: errno \(errno)") }
        defer { xs_close(handle) }
        let shared = SharedHandle(handle)
        for _ in 0..<200 { try shared.read(key) }
        let counts = Mutex<(done: Int, total: Int, failed: Bool)>((0, 0, false))
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        for _ in 0..<threads {
            spawnThread {
                var count = 0
                var failed = false
                while clock.now < deadline {
                    do {
                        for _ in 0..<16 { try shared.read(key) }
                        count += 16
                    } catch {
                        failed = true
                        break
                    }
                }
                counts.withLock {
                    $0.done += 1
                    $0.total += count
                    $0.failed = $0.failed || failed
                }
            }
        }
        while counts.withLock({ $0.done }) < threads { usleep(10_000) }
        let elapsed = start.duration(to: clock.now)
        let (_, total, failed) = counts.withLock { $0 }
        if failed { throw BenchError(description: "xs_read failed") }
        return Double(total) / seconds(elapsed)
    }

    /// libxenstore's handle is thread-safe (a mutex inside); this only carries it across threads.
    final class SharedHandle: @unchecked Sendable {
        let handle: OpaquePointer
        init(_ handle: OpaquePointer) { self.handle = handle }

        func read(_ path: String) throws {
            var length: UInt32 = 0
            guard let value = xs_read(handle, 0, path, &length) else {
                throw BenchError(description: "xs_read \(path): errno \(errno)")
            }
            free(value)
        }
    }

    private final class ThreadBody {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    static func spawnThread(_ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var thread = pthread_t()
        pthread_create(
            &thread, nil,
            { context in
                guard let context else { return nil }
                Unmanaged<ThreadBody>.fromOpaque(context).takeRetainedValue().body()
                return nil
            }, context)
        pthread_detach(thread)
    }
}
