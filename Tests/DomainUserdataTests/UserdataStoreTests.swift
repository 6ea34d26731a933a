import DomainUserdata
import Glibc
import Synchronization
import Testing
import XenCore

@Suite struct UserdataStoreTests {
    let dir = TemporaryDirectory()
    let domains = InMemoryDomainDirectory([5: uuidA, 7: uuidB])
    var store: UserdataStore { UserdataStore(root: dir.path, domains: domains) }

    private func name(_ kind: UserdataFileKind, _ domid: DomainID, _ uuid: DomainUUID, _ userid: String) -> String {
        UserdataFileName(kind: kind, domid: domid, uuid: uuid, userid: userid).description
    }

    @Test func roundTripIsBinarySafe() throws {
        defer { dir.remove() }
        let value: [UInt8] = Array(0...255) + [0, 0, 10, 13, 0]
        try store.store(domid: 5, userid: .xl, data: value)
        #expect(try store.retrieve(domid: 5, userid: .xl) == value)
        // Exactly one data file, named as libxl names it, holding the bytes unchanged; the lock is gone.
        #expect(dir.names() == ["userdata-d.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl"])
        #expect(readFile(dir.file(name(.data, 5, uuidA, "xl"))) == value)
        // The file is private, as libxl creates it (0600).
        var status = stat()
        stat(dir.file(name(.data, 5, uuidA, "xl")), &status)
        #expect(status.st_mode & 0o777 == 0o600)
    }

    @Test func overwriteAndUseridsAreSeparate() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: Array("first".utf8))
        try store.store(domid: 5, userid: .libxlJSON, data: Array("{}\0".utf8))
        try store.store(domid: 5, userid: .xl, data: Array("second".utf8))
        try store.store(domid: 7, userid: .xl, data: Array("other domain".utf8))
        #expect(try store.retrieve(domid: 5, userid: .xl) == Array("second".utf8))
        #expect(try store.retrieve(domid: 5, userid: .libxlJSON) == Array("{}\0".utf8))
        #expect(try store.retrieve(domid: 7, userid: .xl) == Array("other domain".utf8))
        #expect(try store.retrieve(domid: 7, userid: .libvirtXML) == nil)
    }

    @Test func missingIsNil() throws {
        defer { dir.remove() }
        #expect(try store.retrieve(domid: 5, userid: .xl) == nil)
        #expect(dir.names().isEmpty)
    }

    @Test func emptyDataDeletesAsDatalenZero() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: [1])
        try store.store(domid: 5, userid: .xl, data: [])
        #expect(try store.retrieve(domid: 5, userid: .xl) == nil)
        #expect(dir.names().isEmpty)
        // Deleting nothing fails as libxl's unlink(2) does (it returns ENOENT).
        let path = dir.file(name(.data, 5, uuidA, "xl"))
        #expect(throws: UserdataError.notFound(path: path)) { try store.store(domid: 5, userid: .xl, data: []) }
    }

    @Test func unlinkRemovesAndFailsWhenMissing() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .libvirtXML, data: Array("<domain/>".utf8))
        try store.unlink(domid: 5, userid: .libvirtXML)
        #expect(try store.retrieve(domid: 5, userid: .libvirtXML) == nil)
        let path = dir.file(name(.data, 5, uuidA, "libvirt-xml"))
        #expect(throws: UserdataError.notFound(path: path)) { try store.unlink(domid: 5, userid: .libvirtXML) }
    }

    @Test func emptyFileIsAnErrorAsInLibxl() throws {
        defer { dir.remove() }
        let path = dir.file(name(.data, 5, uuidA, "xl"))
        writeLikeLibxl(path, [])
        #expect(throws: UserdataError.emptyFile(path: path)) { try store.retrieve(domid: 5, userid: .xl) }
        #expect(UserdataError.emptyFile(path: path).description == "userdata file \(path) is empty")
    }

    @Test func readsAFileLibxlWrote() throws {
        defer { dir.remove() }
        // What `xl config-update` leaves behind, spelled out by hand rather than through our formatter.
        let config = Array("name = \"guest\"\nmemory = 512\nvcpus = 2\n".utf8)
        writeLikeLibxl(dir.path + "/userdata-d.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl", config)
        // A stale `n` file from an interrupted libxl store must not be read.
        writeLikeLibxl(dir.path + "/userdata-n.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl", Array("torn".utf8))
        #expect(try store.retrieve(domid: 5, userid: .xl) == config)
        // ... and a store replaces libxl's file in place, under the same name.
        try store.store(domid: 5, userid: .xl, data: Array("memory = 1024\n".utf8))
        #expect(
            readFile(dir.path + "/userdata-d.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl")
                == Array("memory = 1024\n".utf8))
    }

    @Test func failedStoreLeavesNoTempFile() throws {
        defer { dir.remove() }
        // A directory where the data file should be: rename(n, d) fails.
        let data = dir.file(name(.data, 5, uuidA, "xl"))
        mkdir(data, 0o700)
        mkdir(data + "/inside", 0o700)
        #expect {
            try store.store(domid: 5, userid: .xl, data: [1, 2, 3])
        } throws: { error in
            guard case .io(op: "rename", _, _) = error as? UserdataError else { return false }
            return true
        }
        #expect(dir.names() == [name(.data, 5, uuidA, "xl")])
    }

    @Test func noSuchDomain() throws {
        defer { dir.remove() }
        #expect(throws: UserdataError.noSuchDomain(9)) { try store.store(domid: 9, userid: .xl, data: [1]) }
        #expect(throws: UserdataError.noSuchDomain(9)) { try store.retrieve(domid: 9, userid: .xl) }
        #expect(throws: UserdataError.noSuchDomain(9)) { try store.unlink(domid: 9, userid: .xl) }
        #expect(dir.names().isEmpty)
    }

    @Test func reusedDomidNeverSeesOldData() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: Array("old domain".utf8))
        domains.destroy(5)
        domains.create(5, uuid: uuidB)
        #expect(try store.retrieve(domid: 5, userid: .xl) == nil)
        try store.store(domid: 5, userid: .xl, data: Array("new domain".utf8))
        #expect(try store.retrieve(domid: 5, userid: .xl) == Array("new domain".utf8))
        #expect(readFile(dir.file(name(.data, 5, uuidA, "xl"))) == Array("old domain".utf8))
    }

    @Test func reservedUseridIsRefused() throws {
        defer { dir.remove() }
        #expect(throws: UserdataError.reservedUserid("domain-userdata-lock")) {
            try store.store(domid: 5, userid: .domainUserdataLock, data: [1])
        }
        let sneaky = try UserdataID(validating: "x-domain-userdata-lock")
        #expect(throws: UserdataError.reservedUserid("x-domain-userdata-lock")) {
            try store.retrieve(domid: 5, userid: sneaky)
        }
    }

    @Test func destroyAllRemovesOneDomainsFilesButNotTheLock() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: [1])
        try store.store(domid: 5, userid: .libxlJSON, data: [2])
        try store.store(domid: 7, userid: .xl, data: [3])
        writeLikeLibxl(dir.file(name(.new, 5, uuidA, "xl")), [9])  // left by a crash
        writeLikeLibxl(dir.file(name(.data, 5, uuidB, "xl")), [4])  // same domid, other domain
        writeLikeLibxl(dir.file(name(.data, 51, uuidA, "xl")), [5])
        writeLikeLibxl(dir.file("unrelated"), [6])
        domains.destroy(5)
        let removed = try store.destroyAll(domid: 5, uuid: uuidA)
        #expect(
            removed.sorted() == [
                name(.data, 5, uuidA, "libxl-json"), name(.data, 5, uuidA, "xl"), name(.new, 5, uuidA, "xl"),
            ])
        #expect(
            dir.names()
                == [
                    name(.data, 51, uuidA, "xl"), name(.data, 5, uuidB, "xl"), name(.data, 7, uuidB, "xl"), "unrelated",
                ].sorted())
        #expect(try store.retrieve(domid: 7, userid: .xl) == [3])
    }

    @Test func lockIsReleasedAndLockFileUnlinked() throws {
        defer { dir.remove() }
        let lockPath = dir.file(name(.lock, 5, uuidA, "domain-userdata-lock"))
        let seen = try store.withDomainLock(domid: 5) { uuid in
            (uuid, access(lockPath, F_OK) == 0)
        }
        #expect(seen.0 == uuidA)
        #expect(seen.1)
        #expect(access(lockPath, F_OK) != 0)
        // A domid reused by another domain while we waited for the lock is noticed after locking, and the
        // lock file is still cleaned up.
        let changing = ScriptedDirectory([uuidA, uuidB])
        let racing = UserdataStore(root: dir.path, domains: changing)
        #expect(throws: UserdataError.domainVanished(5)) { try racing.store(domid: 5, userid: .xl, data: [1]) }
        #expect(dir.names().isEmpty)
        let vanishing = UserdataStore(root: dir.path, domains: ScriptedDirectory([uuidA, nil]))
        #expect(throws: UserdataError.domainVanished(5)) { try vanishing.retrieve(domid: 5, userid: .xl) }
        #expect(dir.names().isEmpty)
    }

    @Test func asyncFormsWork() async throws {
        defer { dir.remove() }
        try await store.store(domid: 7, userid: .xl, data: [1, 2, 3])
        #expect(try await store.retrieve(domid: 7, userid: .xl) == [1, 2, 3])
        try await store.unlink(domid: 7, userid: .xl)
        #expect(try await store.retrieve(domid: 7, userid: .xl) == nil)
        await #expect(throws: UserdataError.noSuchDomain(8)) { try await store.retrieve(domid: 8, userid: .xl) }
    }

    // On a host without Xen, opening must fail with a typed error, not crash or pretend. (On a Xen host the
    // real directory is checked by the Xen tier instead; here the test is reported as skipped.)
    @Test(.enabled(if: !hostHasXen, "this host runs Xen: the real directory is checked in the Xen tier"))
    func realDirectoryFailsTypedWithoutXen() {
        #expect {
            _ = try XenControlDomainDirectory()
        } throws: { error in
            if case .hypervisorUnavailable = error as? UserdataError { return true }
            return false
        }
    }
}

/// Whether this host has the privcmd device (it runs Xen).
let hostHasXen = access("/dev/xen/privcmd", F_OK) == 0 || access("/proc/xen/privcmd", F_OK) == 0

/// Answers each lookup with the next scripted UUID (the last one repeats): models a domain changing between
/// libxl's path lookup and its post-lock re-check.
final class ScriptedDirectory: DomainDirectory {
    private let answers: Mutex<[DomainUUID?]>
    init(_ answers: [DomainUUID?]) { self.answers = Mutex(answers) }
    func uuid(of domid: DomainID) throws(UserdataError) -> DomainUUID? {
        answers.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] }
    }
}
