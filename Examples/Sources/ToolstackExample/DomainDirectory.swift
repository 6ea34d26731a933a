import XenStoreClient  // also XenCore (DomainID)

/// Creates a guest's home directory, owned by the guest, with its name in it.
public func createDomainDirectory(_ client: XenStoreClient, domain: DomainID, name: String) async throws {
    try await client.transaction { h in
        let home = try await h.domainPath(of: domain)
        try await h.createDirectory(home)
        try await h.setPermissions(home, to: XenStorePermissions(owner: domain, others: .none))
        try await h.write(home + "/name", name)
    }
}

/// The name a toolstack gave `domain`, or nil when it has none.
public func domainName(_ client: XenStoreClient, domain: DomainID) async throws -> String? {
    try await client.immediate { h in
        do throws(XenStoreError) {
            return try await h.read(try await h.domainPath(of: domain) + "/name")
        } catch .noEntry {
            return nil
        }
    }
}
