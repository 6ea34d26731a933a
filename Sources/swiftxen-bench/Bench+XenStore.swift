import CXen
import Glibc
import XenStoreClient
import XenStoreServer
import XenTestSupport

// Reads per second on one connection to one XenStoreServer unix socket, in one process run: SwiftXen's
// multiplexing client with 1 and 64 requests in flight against libxenstore (`xs_read` in a loop through
// CXen, the way every C toolstack reads) from 1 and 8 threads. libxenstore serialises its requests behind
// a mutex and makes blocking calls, so its loops run on plain threads, never on the cooperative pool.
//
// A third peer is optional: XENSTORE_BENCH_PEER names a program that reads a key over a xenstored socket with a
// given number of requests in flight for a given time and prints `reads_per_second N` (arguments: SOCKET
// INFLIGHT SECONDS KEY). We run it with ocaml-xenstore's Lwt client (`Xs_client_lwt.Client` over a Lwt_unix
// socket, built outside this tree), the library our client mirrors; it then joins the rounds at 1 and 64 in
// flight, against the same in-process server.
//
// The machine may be shared and busy, so the measurements are interleaved in rounds (each round runs every
// configuration for a short slice, in an order that reverses every round) and the median per configuration is
// reported. The ratios are taken per round, between slices run back to back, and their median reported: load
// that comes and goes then hits both sides of a ratio alike instead of skewing it.
enum XenStoreBench {
    static let rounds = 15
    static let seconds = 0.25
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

        // One connection per configuration, opened once (as an application would).
        let swiftClient = try await XenStoreClient.connect(socketPath: socketPath)
        setenv("XENSTORED_PATH", socketPath, 1)
        guard let handle = xs_open(0) else { throw BenchError(description: "xs_open failed: errno \(errno)") }
        let shared = SharedHandle(handle)
        defer { xs_close(handle) }
        for _ in 0..<500 {
            _ = try await swiftClient.immediate { h throws(XenStoreError) in try await h.readBytes(key) }
            guard shared.read(key) else { throw BenchError(description: "xs_read \(key): errno \(errno)") }
        }

        // XENSTORE_BENCH_ONLY=1,3 runs only those configurations (0-based, for profiling one at a time).
        let only = getenv("XENSTORE_BENCH_ONLY").map {
            Set(String(cString: $0).split(separator: ",").compactMap { Int($0) })
        }
        func wanted(_ index: Int) -> Bool { only?.contains(index) ?? true }
        let peer = getenv("XENSTORE_BENCH_PEER").map { String(cString: $0) }
        var samples: [[Double]] = Array(repeating: [], count: 8)
        // Each SwiftXen configuration next to the libxenstore (and peer) one it is compared with.
        let order = peer == nil ? [0, 4, 2, 1, 5, 3] : [0, 4, 6, 2, 1, 5, 7, 3]
        for round in 0..<rounds {
            for index in round % 2 == 0 ? order : order.reversed() where wanted(index) {
                let rate: Double
                switch index {
                case 0: rate = try await swiftRate(swiftClient, inFlight: 1, executor: nil)
                case 1: rate = try await swiftRate(swiftClient, inFlight: 64, executor: nil)
                case 2: rate = try await swiftRate(swiftClient, inFlight: 1, executor: swiftClient.executor)
                case 3: rate = try await swiftRate(swiftClient, inFlight: 64, executor: swiftClient.executor)
                case 4: rate = try libxenstoreRate(shared, threads: 1)
                case 5: rate = try libxenstoreRate(shared, threads: 8)
                default: rate = try peerRate(peer ?? "", socketPath: socketPath, inFlight: index == 6 ? 1 : 64)
                }
                samples[index].append(rate)
            }
        }
        await swiftClient.close()
        await listener.close()

        func median(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.sorted()[values.count / 2] }
        let medians = samples.map(median)
        /// The median over rounds of `swift[round] / c[round]`, where `c` is the libxenstore rate of that round.
        func ratio(_ swift: Int, _ c: (Int) -> Double) -> Double {
            median(samples[swift].indices.map { samples[swift][$0] / max(c($0), 1) })
        }
        func one(_ round: Int) -> Double { samples[4].indices.contains(round) ? samples[4][round] : 0 }
        // libxenstore's best configuration is the one with the higher median (a per-round maximum of two
        // noisy rates would be biased upwards).
        let bestIndex = medians[5] > medians[4] ? 5 : 4
        func best(_ round: Int) -> Double {
            samples[bestIndex].indices.contains(round) ? samples[bestIndex][round] : 0
        }
        let names = [
            "SwiftXen, 1 in flight", "SwiftXen, 64 in flight", "SwiftXen, 1 in flight, client executor",
            "SwiftXen, 64 in flight, client executor", "libxenstore xs_read, 1 thread",
            "libxenstore xs_read, 8 threads", "peer (XENSTORE_BENCH_PEER), 1 in flight",
            "peer (XENSTORE_BENCH_PEER), 64 in flight",
        ]
        print("   reads/s on one connection, median of \(rounds) interleaved rounds of \(seconds) s (min-max):")
        for (index, name) in names.enumerated() where index < 6 || peer != nil {
            let pad = String(repeating: " ", count: max(0, 42 - name.count))
            let low = Int(samples[index].min() ?? 0)
            let high = Int(samples[index].max() ?? 0)
            print("   \(name)\(pad) \(Int(medians[index]))  (\(low)-\(high))")
        }
        // Median of the per-round ratios (slices run back to back see the same load).
        print("   ratio 1 in flight / libxenstore 1 thread:    \(format(ratio(0, one)))x (goal >= 0.9x)")
        print("   ratio 64 in flight / best libxenstore:       \(format(ratio(1, best)))x (goal >= 10x)")
        print("   with the client executor:                    \(format(ratio(2, one)))x / \(format(ratio(3, best)))x")
        if peer != nil {
            func peerAt(_ index: Int) -> (Int) -> Double {
                { round in samples[index].indices.contains(round) ? samples[index][round] : 0 }
            }
            print("   ratio 1 in flight / peer 1 in flight:        \(format(ratio(0, peerAt(6))))x (goal >= 0.9x)")
            print("   ratio 64 in flight / peer 64 in flight:      \(format(ratio(1, peerAt(7))))x (goal >= 1.0x)")
        }
    }

    static func format(_ value: Double) -> String {
        let scaled = (value * 100).rounded() / 100
        return String(scaled)
    }

    // MARK: - SwiftXen

    /// Reads per second from `inFlight` tasks sharing `client`, optionally preferring `executor`.
    static func swiftRate(
        _ client: XenStoreClient, inFlight: Int, executor: (any TaskExecutor)?
    ) async throws -> Double {
        try await RateLoop.tasks(inFlight, seconds: seconds, executor: executor) {
            _ = try await client.immediate { h throws(XenStoreError) in try await h.readBytes(key) }
        }
    }

    // MARK: - The optional peer

    /// Runs the peer program for one slice and returns the rate it printed.
    static func peerRate(_ path: String, socketPath: String, inFlight: Int) throws -> Double {
        let output = try NBDBench.tool(path, [socketPath, String(inFlight), String(seconds), key])
        let words = String(decoding: output, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard let at = words.firstIndex(of: "reads_per_second"), at + 1 < words.count,
            let rate = Double(words[at + 1])
        else { throw BenchError(description: "\(path) printed no reads_per_second") }
        return rate
    }

    // MARK: - libxenstore

    struct BenchError: Error, CustomStringConvertible {
        var description: String
    }

    /// `threads` plain threads sharing one `xs_open` handle (opened on the socket through `XENSTORED_PATH`,
    /// as libxenstore reads it) call `xs_read` until the deadline.
    static func libxenstoreRate(_ shared: SharedHandle, threads: Int) throws -> Double {
        do {
            return try RateLoop.threads(threads, seconds: seconds) { shared.read(key) }
        } catch {
            throw BenchError(description: "xs_read \(key) on \(threads) threads: \(error)")
        }
    }

    /// libxenstore's handle is thread-safe (a mutex inside); this only carries it across threads.
    final class SharedHandle: @unchecked Sendable {
        let handle: OpaquePointer
        init(_ handle: OpaquePointer) { self.handle = handle }

        /// One `xs_read`; false when it failed.
        func read(_ path: String) -> Bool {
            var length: UInt32 = 0
            guard let value = xs_read(handle, 0, path, &length) else { return false }
            free(value)
            return true
        }
    }
}
