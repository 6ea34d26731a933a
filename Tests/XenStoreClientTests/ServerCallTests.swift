import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// Every call of the client against `XenStoreServer`, in-process and over its unix socket.
@Suite struct ServerCallTests {
    @Test(arguments: Via.allCases)
    func everyCall(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, _) = try rig.client()
        try await client.immediate { h in
            try await h.write("/tool/a", "1")
            #expect(try await h.read("/tool/a") == "1")
            try await h.write("/tool/bin", bytes: [0, 1, 2, 255])
            #expect(try await h.readBytes("/tool/bin") == [0, 1, 2, 255])
            try await h.createDirectory("/tool/dir")
            try await h.createDirectory("/tool/dir")  // existing: unchanged, no error
            #expect(try await h.read("/tool/dir") == "")
            #expect(Set(try await h.directory("/tool")) == ["a", "bin", "dir"])
            #expect(try await h.exists("/tool/a"))
            #expect(!(try await h.exists("/tool/none")))
            await #expect(throws: XenStoreError.noEntry(path: "/tool/none", op: .read)) {
                try await h.read("/tool/none")
            }
            try await h.remove("/tool/dir")
            try await h.remove("/tool/dir")  // already absent: fine
            #expect(!(try await h.exists("/tool/dir")))

            let acl = XenStorePermissions(owner: 5, others: .read, acl: [XenStorePermission(.both, 7)])
            try await h.setPermissions("/tool/a", to: acl)
            #expect(try await h.permissions(of: "/tool/a") == acl)

            #expect(try await h.domainPath(of: 3) == "/local/domain/3")
            #expect(!(try await h.isDomainIntroduced(9)))
            try await h.introduce(9, frame: 0x1234, port: 7)
            try await h.introduce(10, frame: -1, port: 8)
            #expect(try await h.isDomainIntroduced(9))
            try await h.setTarget(10, target: 9)
            try await h.release(9)
            #expect(!(try await h.isDomainIntroduced(9)))

            // XS_RESTRICT is gone since Xen 4.9: the server's refusal arrives as a typed error.
            do {
                try await h.restrict(5)
                Issue.record("restrict unexpectedly succeeded")
            } catch let error as XenStoreError {
                switch error {
                case .notSupported, .invalid: break
                default: Issue.record("restrict: unexpected \(error)")
                }
            }

            try await h.watch("/tool", token: "manual")
            try await h.unwatch("/tool", token: "manual")
            try await h.resetWatches()
            _ = try? await h.debug(["print", "hello from the client test"])
        }
        await client.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func relativePathsAndPermissionsOfAnUnprivilegedDomain(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (dom0, _) = try rig.client()
        try await dom0.immediate { h in
            try await h.write("/local/domain/5/data", "x")
            try await h.setPermissions("/local/domain/5", to: XenStorePermissions(owner: 5))
            try await h.setPermissions("/local/domain/5/data", to: XenStorePermissions(owner: 5))
            try await h.write("/secret", "s")
        }
        let (guest, _) = try rig.client(domain: ServerRig.guestDomain)
        try await guest.immediate { h in
            #expect(try await h.read("data") == "x")
            try await h.write("data", "y")
            await #expect(throws: XenStoreError.accessDenied(path: "/secret", op: .read)) {
                try await h.read("/secret")
            }
        }
        #expect(rig.server.value(at: "/local/domain/5/data") == Array("y".utf8))
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func bigDirectoryIsReadInParts(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, counting) = try rig.client()
        let names = (0..<700).map { "child-\(String($0 + 10_000))" }  // 700 × 12 bytes > 4096
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chunk in stride(from: 0, to: names.count, by: 100) {
                group.addTask {
                    try await client.immediate { h in
                        for name in names[chunk..<min(chunk + 100, names.count)] {
                            try await h.createDirectory("/big/\(name)")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let listing = try await client.immediate { h in try await h.directory("/big") }
        #expect(Set(listing) == Set(names) && listing.count == names.count)
        #expect(counting.sent.contains { $0.type == .directoryPart })
        await client.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func thousandConcurrentRequestsFromFiftyTasks(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, counting) = try rig.client()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<50 {
                group.addTask {
                    for index in 0..<10 {
                        let path = "/load/\(task)/\(index)"
                        try await client.immediate { h in try await h.write(path, "\(task * 1000 + index)") }
                        let value = try await client.immediate { h in try await h.read(path) }
                        #expect(value == "\(task * 1000 + index)")
                    }
                }
            }
            try await group.waitForAll()
        }
        // 1,000 requests on one connection; the writer batched them into fewer writes.
        #expect(counting.sent.count == 1000)
        #expect(rig.server.children(of: "/load")?.count == 50)
        await client.close()
        await rig.shutDown()
    }
}
