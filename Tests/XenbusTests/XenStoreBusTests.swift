import Testing
import XenCore
import XenStoreClient
import XenStoreServer
import Xenbus

/// The seam's operations through `XenStoreBus` against the in-memory xenstored.
@Suite struct XenStoreBusTests {
    let server = XenStoreServer()
    var store: XenStoreBus { XenStoreBus(client: XenStoreClient(transport: server.connect(domain: .dom0))) }

    @Test func directoryListsChildrenAndIsEmptyWhenAbsent() async throws {
        let store = self.store
        try await store.write([("/a/x", "1"), ("/a/y", "2")])
        #expect(try await store.directory("/a").sorted() == ["x", "y"])
        #expect(try await store.directory("/missing").isEmpty)
    }

    @Test func nodesAreWrittenWithOwnerAndReaders() async throws {
        try await store.write([
            XenbusNode(path: "/dev/front", value: "f", owner: DomainID(7), readers: [.dom0]),
            XenbusNode(path: "/dev/back", value: "b", owner: .dom0, readers: [DomainID(7)]),
        ])
        #expect(server.value(at: "/dev/front") == Array("f".utf8))
        #expect(server.permissions(at: "/dev/front")?.description == "n7,r0")
        #expect(server.permissions(at: "/dev/back")?.description == "n0,r7")
    }

    @Test func writeIfPresentLeavesAnAbsentNodeAbsent() async throws {
        let store = self.store
        #expect(try await store.writeIfPresent("/gone/state", "6") == false)
        #expect(try await store.read("/gone/state") == nil)
        #expect(try await store.read("/gone") == nil)
        try await store.write("/here/state", "4")
        #expect(try await store.writeIfPresent("/here/state", "6"))
        #expect(try await store.read("/here/state") == "6")
    }

    @Test func watchFiresOnRegistrationThenOnChanges() async throws {
        let store = self.store
        let changes = try await store.watch(["/w/a", "@introduceDomain"])
        var iterator = changes.makeAsyncIterator()
        let initial = [try await iterator.next(), try await iterator.next()].compactMap { $0 }
        #expect(Set(initial) == ["/w/a", "@introduceDomain"])
        try await store.write("/w/a/key", "1")
        #expect(try await iterator.next() == "/w/a/key")
        server.introduceDomain(DomainID(3))
        #expect(try await iterator.next() == "@introduceDomain")
    }
}
