import Testing
import ToolstackExample
import XenStoreClient
import XenStoreServer

@Test func theGuestOwnsItsDirectory() async throws {
    let server = XenStoreServer()
    let dom0 = XenStoreClient(transport: server.connect(domain: .dom0))
    try await createDomainDirectory(dom0, domain: 7, name: "web")

    #expect(server.value(at: "/local/domain/7/name") == Array("web".utf8))
    #expect(server.permissions(at: "/local/domain/7")?.owner == 7)
    #expect(server.check().isEmpty)  // the store's invariants hold

    // The guest sees its own directory, and nobody else's.
    let guest = XenStoreClient(transport: server.connect(domain: 7))
    let name = try await guest.immediate { h in try await h.read("/local/domain/7/name") }
    #expect(name == "web")
    await #expect(throws: XenStoreError.self) {
        try await guest.immediate { h in try await h.write("/local/domain/0/name", "x") }
    }
    await guest.close()
    await dom0.close()
}

@Test func aDomainWithoutANameHasNone() async throws {
    let server = XenStoreServer()
    let dom0 = XenStoreClient(transport: server.connect(domain: .dom0))
    #expect(try await domainName(dom0, domain: 8) == nil)
    try await createDomainDirectory(dom0, domain: 8, name: "db")
    #expect(try await domainName(dom0, domain: 8) == "db")
    await dom0.close()
}
