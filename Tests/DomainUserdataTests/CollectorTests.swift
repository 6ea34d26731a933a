import DomainUserdata
import Testing
import XenCore

@Suite struct CollectorTests {
    let dir = TemporaryDirectory()
    let domains = InMemoryDomainDirectory([5: uuidA, 7: uuidB])
    var store: UserdataStore { UserdataStore(root: dir.path, domains: domains) }

    @Test func sweepRemovesOnlyDeadDomainsData() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: [1])
        try store.store(domid: 5, userid: .libxlJSON, data: [2])
        try store.store(domid: 7, userid: .xl, data: [3])
        // A lock file left by a crashed toolstack for domain 5, and foreign files, which stay.
        writeLikeLibxl(dir.file(UserdataFileName.lock(domid: 5, uuid: uuidA).description), [])
        writeLikeLibxl(dir.file("qemu-resume.5"), [4])
        let collector = UserdataCollector(store: store)
        #expect(try collector.sweep().isEmpty)

        domains.destroy(5)
        let collected = try collector.sweep()
        #expect(collected.map(\.domid) == [5])
        #expect(collected.first?.uuid == uuidA)
        #expect(collected.first?.removed == ["userdata-d.5.\(uuidA).libxl-json", "userdata-d.5.\(uuidA).xl"])
        // The lock file went with destroyAll's own unlock, as in libxl's destroy path.
        #expect(dir.names() == ["qemu-resume.5", "userdata-d.7.\(uuidB).xl"])
        #expect(try store.retrieve(domid: 7, userid: .xl) == [3])
    }

    @Test func sweepCollectsAReusedDomidsOldData() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: Array("old".utf8))
        domains.create(5, uuid: uuidB)  // domid 5 now belongs to another domain
        try store.store(domid: 5, userid: .xl, data: Array("new".utf8))
        let collected = try UserdataCollector(store: store).sweep()
        #expect(collected.map(\.uuid) == [uuidA])
        #expect(dir.names() == ["userdata-d.5.\(uuidB).xl"])
        #expect(try store.retrieve(domid: 5, userid: .xl) == Array("new".utf8))
    }

    @Test func runSweepsOnEveryRelease() async throws {
        defer { dir.remove() }
        try await store.store(domid: 5, userid: .xl, data: [1])
        try await store.store(domid: 7, userid: .xl, data: [2])
        let (releases, fire) = AsyncStream.makeStream(of: String.self)
        let (sweeps, sweepDone) = AsyncStream.makeStream(of: [UserdataCollector.Collected].self)
        let collector = UserdataCollector(store: store)
        let running = Task { try await collector.run(releases: releases) { sweepDone.yield($0) } }
        var results = sweeps.makeAsyncIterator()
        #expect(await results.next() == [])  // the initial sweep: everyone alive

        domains.destroy(7)
        fire.yield("@releaseDomain")
        #expect(await results.next()?.map(\.domid) == [7])
        #expect(dir.names() == ["userdata-d.5.\(uuidA).xl"])

        domains.destroy(5)
        fire.yield("@releaseDomain")
        #expect(await results.next()?.map(\.domid) == [5])
        #expect(dir.names().isEmpty)

        fire.finish()
        try await running.value
    }
}
