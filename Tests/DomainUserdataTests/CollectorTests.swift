import DomainUserdata
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenStoreServer

#if canImport(Glibc)
    import Glibc
#endif

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

    /// Found by the `userdata` fuzz target (2026-12-04): a directory where a dead domain's lock file belongs made
    /// that domain's destroyAll throw, which ended the whole sweep, so the next dead domain's files stayed.
    @Test func oneDomainsUnusableLockDoesNotStopTheSweep() throws {
        defer { dir.remove() }
        try store.store(domid: 5, userid: .xl, data: [1])
        try store.store(domid: 7, userid: .xl, data: [2])
        let blocked = UserdataFileName.lock(domid: 5, uuid: uuidA).description
        #expect(mkdir(dir.file(blocked), 0o700) == 0)
        domains.destroy(5)
        domains.destroy(7)
        let collected = try UserdataCollector(store: store).sweep()
        #expect(collected.map(\.domid) == [5, 7])
        #expect(collected.first?.removed == [])
        #expect(collected.first?.failure != nil, "domain 5's lock could not be taken: \(collected)")
        #expect(collected.last?.removed == ["userdata-d.7.\(uuidB).xl"])
        #expect(collected.last?.failure == nil)
        // Domain 5's data stays for a later sweep (libxl would not remove it without the lock either).
        #expect(dir.names() == ["userdata-d.5.\(uuidA).xl", blocked])
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

@Suite struct CollectorReleaseDomainTests {
    @Test func collectsAfterASimulatedDomainIsReleasedThroughXenstore() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let hypervisor = SimulatedHypervisor()
        let guest = try hypervisor.createDomain(name: "guest")
        let other = try hypervisor.createDomain(name: "other")
        let store = UserdataStore(root: dir.path, domains: hypervisor)
        try await store.store(domid: guest.id, userid: .xl, data: Array("memory = 128\n".utf8))
        try await store.store(domid: guest.id, userid: .libxlJSON, data: Array("{}\0".utf8))
        try await store.store(domid: other.id, userid: .xl, data: Array("memory = 256\n".utf8))

        let xenstored = XenStoreServer()
        xenstored.introduceDomain(guest.id)
        xenstored.introduceDomain(other.id)
        let client = XenStoreClient(transport: xenstored.connect())
        let (sweeps, sweepDone) = AsyncStream.makeStream(of: [UserdataCollector.Collected].self)
        let collector = UserdataCollector(store: store)
        let running = Task { try await collector.run(client: client) { sweepDone.yield($0) } }
        var results = sweeps.makeAsyncIterator()
        #expect(await results.next() == [])  // sweep at start
        #expect(await results.next() == [])  // the watch's initial event

        // The toolstack destroys the domain, then xenstored releases it and fires @releaseDomain.
        #expect(hypervisor.destroyDomain(guest.id))
        #expect(xenstored.releaseDomain(guest.id))
        let collected = await results.next()
        #expect(collected?.map(\.domid) == [guest.id])
        #expect(collected?.first?.uuid == guest.uuid)
        #expect(
            dir.names() == [UserdataFileName(kind: .data, domid: other.id, uuid: other.uuid, userid: "xl").description]
        )
        #expect(try await store.retrieve(domid: other.id, userid: .xl) == Array("memory = 256\n".utf8))

        // A new domain that reuses the domid starts empty.
        let reused = try hypervisor.createDomain(id: guest.id, name: "reused")
        #expect(reused.uuid != guest.uuid)
        #expect(try await store.retrieve(domid: reused.id, userid: .xl) == nil)

        running.cancel()
        _ = try? await running.value
        await client.close()
    }

    @Test func simulatedReleasesDriveTheCollectorDirectly() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let hypervisor = SimulatedHypervisor()
        let guest = try hypervisor.createDomain()
        let store = UserdataStore(root: dir.path, domains: hypervisor)
        try await store.store(domid: guest.id, userid: .libvirtXML, data: Array("<domain/>".utf8))
        let (sweeps, sweepDone) = AsyncStream.makeStream(of: [UserdataCollector.Collected].self)
        let releases = hypervisor.domainReleases()
        let running = Task { try await UserdataCollector(store: store).run(releases: releases) { sweepDone.yield($0) } }
        var results = sweeps.makeAsyncIterator()
        #expect(await results.next() == [])
        hypervisor.destroyDomain(guest.id)
        #expect(await results.next()?.map(\.domid) == [guest.id])
        #expect(dir.names().isEmpty)
        running.cancel()
        _ = try? await running.value
    }
}
