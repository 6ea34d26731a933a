import XenStoreClient
import XenStoreServer

// README.md's quickstarts, one function each, so the README's copies compile and run (QuickstartsTests).

/// Creates domain 5's directory and name in one transaction, reads the name back and waits for its state.
public func xenStoreQuickstart(
    server: XenStoreServer
) async throws -> (client: XenStoreClient, name: String, state: String) {
    let client = XenStoreClient(transport: server.connect(domain: .dom0))
    try await client.transaction { h in  // retried on conflict
        try await h.createDirectory("/local/domain/5")
        try await h.setPermissions("/local/domain/5", to: XenStorePermissions(owner: 5))
        try await h.write("/local/domain/5/name", "guest5")  // owned by domain 5, as its directory
    }
    let name = try await client.immediate { h in try await h.read("/local/domain/5/name") }
    let state = try await client.wait { h in  // re-run whenever what it read changes
        guard let value = try? await h.read("/local/domain/5/state") else { throw XenStoreError.again }
        return value
    }
    return (client, name, state)
}
