import DomainUserdata
import Foundation
import Glibc
import Synchronization
import Testing
import XenCore

/// Tests that run the built `swiftxen userdata` executable as separate processes: cross-process locking and
/// crash safety under SIGKILL.
@Suite(.serialized) struct ProcessTests {
    let dir = TemporaryDirectory()
    let values = TemporaryDirectory()
    let exe = swiftxenExecutable()
    var store: UserdataStore { UserdataStore(root: dir.path, domains: InMemoryDomainDirectory([5: uuidA])) }

    func setArguments(_ valueDomid: String = "5") -> [String] {
        [exe, "userdata", "set", "--root", dir.path, "--uuid", uuidA.description, valueDomid, "xl"]
    }

    /// A value that differs from every other generation in every 8-byte word (each word mixes the generation and
    /// its index), so any mix of two values, at any offset, is detected. Built through raw pointers: this runs
    /// hundreds of times on megabyte values in a debug build.
    static func value(_ generation: Int, size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        out.withUnsafeMutableBytes { raw in
            let words = raw.count / 8
            let base = raw.baseAddress!
            for index in 0..<words {
                let word = (UInt64(generation) << 40) ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
                base.storeBytes(of: word.littleEndian, toByteOffset: index * 8, as: UInt64.self)
            }
            for index in (words * 8)..<raw.count { raw[index] = UInt8(truncatingIfNeeded: generation) }
        }
        return out
    }

    /// Byte equality at memcmp speed (Array's == is element by element in a debug build).
    static func same(_ lhs: [UInt8]?, _ rhs: [UInt8]) -> Bool {
        guard let lhs, lhs.count == rhs.count else { return false }
        return lhs.withUnsafeBytes { l in
            rhs.withUnsafeBytes { r in memcmp(l.baseAddress!, r.baseAddress!, l.count) == 0 }
        }
    }

    func valueFile(_ generation: Int, size: Int) -> String {
        let path = values.file("value-\(generation % 4)")
        writeLikeLibxl(path, Self.value(generation, size: size))
        return path
    }

    @Test func cliRoundTripIsBinarySafe() async throws {
        defer { dir.remove(); values.remove() }
        #expect(FileManager.default.isExecutableFile(atPath: exe), "swiftxen not built next to the tests: \(exe)")
        let (code, read, missing) = await blocking { [self] in
            let input = valueFile(3, size: 1000)
            let setStatus = Child.spawn(setArguments(), stdin: input).wait()
            let output = values.file("out")
            let getStatus = Child.spawn(
                [exe, "userdata", "get", "--root", dir.path, "--uuid", uuidA.description, "5", "xl"], stdout: output
            ).wait()
            let rm = Child.spawn([exe, "userdata", "rm", "--root", dir.path, "--uuid", uuidA.description, "5", "xl"])
                .wait()
            let getMissing = Child.spawn(
                [exe, "userdata", "get", "--root", dir.path, "--uuid", uuidA.description, "5", "xl"]
            ).wait()
            return ([setStatus, getStatus, rm], readFile(output), getMissing)
        }
        #expect(code == [0, 0, 0])
        #expect(read == Self.value(3, size: 1000))
        #expect(missing == 2)
    }

    @Test func lockExcludesAnotherProcess() async throws {
        defer { dir.remove(); values.remove() }
        try await store.store(domid: 5, userid: .xl, data: Array("before".utf8))
        let (heldBack, valueWhileHeld, status) = try await blocking { [self] in
            Result { () throws(UserdataError) in
                let input = valueFile(1, size: 4096)
                var child: Child?
                let observed = try store.withDomainLock(domid: 5) { _ in
                    child = Child.spawn(setArguments(), stdin: input)
                    usleep(300_000)
                    // Still blocked in flock: it has not finished, and the value is untouched.
                    return (child!.isRunning(), readFile(dir.file("userdata-d.5.\(uuidA).xl")))
                }
                return (observed.0, observed.1, child!.wait())
            }
        }.get()
        #expect(heldBack)
        #expect(valueWhileHeld == Array("before".utf8))
        #expect(status == 0)
        #expect(try await store.retrieve(domid: 5, userid: .xl) == Self.value(1, size: 4096))
    }

    @Test func fourProcessesStoringConcurrentlyAreSerialised() async throws {
        defer { dir.remove(); values.remove() }
        let size = 512 * 1024
        let candidates = (0..<4).map { Self.value($0, size: size) }
        let inputs = (0..<4).map { valueFile($0, size: size) }
        let store = self.store
        let args = setArguments()
        let outcome = await blocking {
            let done = Atomic<Int>(0)
            let statuses = Mutex<[Int32]>([])
            let reads = Mutex<[Bool]>([])
            // Five threads of their own (concurrentPerform runs iterations one after another on one CPU, and
            // the reader would then start after the last writer).
            let workers = DispatchGroup()
            for worker in 0..<5 {
                workers.enter()
                Thread.detachNewThread {
                    defer { workers.leave() }
                    if worker < 4 {
                        for _ in 0..<6 {
                            let status = Child.spawn(args, stdin: inputs[worker]).wait()
                            statuses.withLock { $0.append(status) }
                        }
                        done.add(1, ordering: .sequentiallyConsistent)
                    } else {
                        // A reader in this process, taking the same lock, never sees a torn or mixed value.
                        while done.load(ordering: .sequentiallyConsistent) < 4 {
                            let value = try? store.retrieve(domid: 5, userid: .xl)
                            let ok = value == nil || candidates.contains { Self.same(value, $0) }
                            reads.withLock { $0.append(ok) }
                        }
                    }
                }
            }
            workers.wait()
            return (statuses.withLock { $0 }, reads.withLock { $0 })
        }
        #expect(outcome.0.count == 24)
        #expect(outcome.0.allSatisfy { $0 == 0 })
        #expect(!outcome.1.isEmpty)
        #expect(outcome.1.allSatisfy { $0 })
        let final = try await store.retrieve(domid: 5, userid: .xl)
        #expect(candidates.contains { Self.same(final, $0) })
        // Every store renamed its `n` file and unlinked the lock.
        #expect(dir.names() == ["userdata-d.5.\(uuidA).xl"])
    }

    @Test func sigkillAtRandomMomentsNeverTearsAValue() async throws {
        defer { dir.remove(); values.remove() }
        let size = 512 * 1024
        let iterations = 200
        try await store.store(domid: 5, userid: .xl, data: Self.value(0, size: size))
        let report = await blocking { [self] () -> (old: Int, new: Int, midWrite: Int, torn: [String]) in
            // Calibrate: how long an uninterrupted store takes here, now.
            var total = 0.0
            var generation = 1
            for _ in 0..<3 {
                let input = valueFile(generation, size: size)
                let start = MonotonicClock.seconds()
                _ = Child.spawn(setArguments(), stdin: input).wait()
                total += MonotonicClock.seconds() - start
                generation += 1
            }
            let window = total / 3
            var current = Self.value(generation - 1, size: size)
            var old = 0
            var new = 0
            var torn: [String] = []
            var midWrite = 0
            var rng = SystemRandomNumberGenerator()
            let tempFile = dir.file("userdata-n.5.\(uuidA).xl")
            for iteration in 0..<iterations {
                let next = Self.value(generation, size: size)
                let input = values.file("value-\(generation % 2)")
                writeLikeLibxl(input, next)
                let child = Child.spawn(setArguments(), stdin: input)
                if iteration % 4 == 3 {
                    // Every fourth kill aims at the write itself: as soon as the `n` file exists (plus a
                    // random few hundred microseconds), so the crash window is hit however fast this
                    // machine is today.
                    let deadline = MonotonicClock.seconds() + window * 2
                    while access(tempFile, F_OK) != 0 && MonotonicClock.seconds() < deadline { usleep(50) }
                    usleep(UInt32.random(in: 0..<400, using: &rng))
                } else {
                    // Biased towards the end of the window, where the writes, fsync and rename happen.
                    let delay = window * 1.15 * Double.random(in: 0..<1, using: &rng).squareRoot()
                    usleep(UInt32(delay * 1_000_000))
                }
                child.kill()
                _ = child.wait()
                // An `n` file left behind means the kill landed between its creation and the rename.
                if access(tempFile, F_OK) == 0 { midWrite += 1 }
                let seen: [UInt8]?
                do { seen = try store.retrieve(domid: 5, userid: .xl) } catch { seen = nil }
                if Self.same(seen, current) {
                    old += 1
                } else if Self.same(seen, next) {
                    new += 1
                    current = next
                } else {
                    let lead = seen.map { Array($0.prefix(8)) } ?? []
                    torn.append("generation \(generation): got \(seen?.count ?? -1) bytes, lead \(lead)")
                }
                generation += 1
            }
            return (old, new, midWrite, torn)
        }
        #expect(report.torn.isEmpty, "torn values: \(report.torn)")
        #expect(report.old + report.new == iterations)
        // The kills landed both before and after the commit point.
        #expect(report.old > 0)
        #expect(report.new > 0)
        #expect(report.midWrite > 0)
    }
}
