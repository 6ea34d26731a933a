import Testing
import XenCore
import XenStoreConversations
import XenStoreProtocol
import XenStoreServer

/// Hostile or odd input: typed error replies, closed connections, never a crash or a disturbed neighbour.
@Suite struct RobustnessTests {
    @Test func malformedPayloadsAnswerEINVALAndTheConnectionLivesOn() async throws {
        let server = XenStoreServer()
        let client = TestClient(server.connect())
        let cases: [(XenStoreMessageType, String)] = [
            (.read, "/a"), (.write, "/nonul"), (.transactionEnd, "maybe\0"), (.setPermissions, "/a\0q5\0"),
            (.watch, "/a\0"), (.introduce, "1\0"), (.release, "99999\0"),
        ]
        for (index, (type, payload)) in cases.enumerated() {
            let packet = XenStorePacket(type: type, requestID: UInt32(index), payload: Array(payload.utf8))
            #expect(try await client.callRaw(packet) == .error(.einval), "\(type)")
        }
        #expect(try await client.call(.write(path: "/still", value: [1])) == .ok(.write))
    }

    @Test func unknownAndServerOnlyTypesAnswerENOSYS() async throws {
        let server = XenStoreServer()
        let client = TestClient(server.connect())
        for raw: UInt32 in [20, 23, 99, 0xFFFF, 15, 16] {
            let packet = XenStorePacket(type: XenStoreMessageType(rawValue: raw), requestID: raw, payload: [0])
            #expect(try await client.callRaw(packet) == .error(.enosys), "type \(raw)")
        }
    }

    @Test func requestIDsAreEchoedWhateverTheyAre() async throws {
        let server = XenStoreServer()
        let connection = server.connect()
        for requestID: UInt32 in [0, 1, 0xDEAD_BEEF, .max] {
            try await connection.write(XenStoreRequest.getDomainPath(domain: 3).packet(requestID: requestID).bytes)
            var parser = XenStorePacketParser()
            parser.append(try #require(try await connection.read()))
            let packet = try #require(try parser.next())
            #expect(packet.requestID == requestID)
            #expect(try XenStoreReply(decoding: packet) == .domainPath("/local/domain/3"))
        }
    }

    @Test func oversizePacketClosesOnlyThatConnection() async throws {
        let server = XenStoreServer()
        let bad = server.connect()
        let good = TestClient(server.connect())
        #expect(server.connectionCount == 2)
        try await bad.write(XenStoreHeader(type: .write, requestID: 1, transactionID: 0, length: 4097).bytes)
        #expect(try await bad.read() == nil)
        await #expect(throws: XenStoreServerError.connectionClosed) { try await bad.write([0]) }
        #expect(server.connectionCount == 1)
        #expect(try await good.call(.write(path: "/ok", value: [])) == .ok(.write))
    }

    @Test func randomGarbageNeverCrashesOrDisturbsOthers() async throws {
        let server = XenStoreServer()
        let neighbour = TestClient(server.connect())
        var generator = SplitMix64(seed: 0x5EED)
        for _ in 0..<200 {
            let fuzz = server.connect(domain: DomainID(UInt16(generator.next() % 3)))
            var bytes: [UInt8] = []
            for _ in 0..<(1 + generator.next() % 8) {
                let type = UInt32(generator.next() % 25)
                let length = Int(generator.next() % 40)
                let alphabet = Array("/a@b\0 T F0123456789rwnb-".utf8)
                let payload = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
                XenStorePacket(
                    type: XenStoreMessageType(rawValue: type), requestID: 7,
                    transactionID: UInt32(generator.next() % 3), payload: payload
                )
                .encode(into: &bytes)
            }
            // Cut at a random point: the tail stays buffered, as a partial packet would.
            let cut = Int(generator.next() % UInt64(bytes.count + 1))
            try await fuzz.write(Array(bytes[..<cut]))
            await fuzz.close()
        }
        #expect(try await neighbour.call(.write(path: "/neighbour", value: [1])) == .ok(.write))
        #expect(server.check().isEmpty)
        #expect(server.connectionCount == 1)
    }

    @Test func closedConnectionsLoseWatchesAndTransactions() async throws {
        let server = XenStoreServer()
        let watcher = server.connect()
        let client = TestClient(watcher)
        _ = try await client.call(.watch(path: "/x", token: "t"))
        _ = try await client.call(.transactionStart)
        await watcher.close()
        #expect(try await watcher.read() == nil)
        let other = TestClient(server.connect())
        #expect(try await other.call(.write(path: "/x/y", value: [])) == .ok(.write))
        #expect(server.connectionCount == 1)
    }
}

@Suite struct DirectoryTests {
    @Test func bigDirectoriesGiveE2BIGButDirectoryPartReassemblesThem() async throws {
        let server = XenStoreServer()
        let client = TestClient(server.connect())
        let names = (0..<300).map { "child-with-a-long-name-\($0)" }
        for name in names { _ = try await client.call(.write(path: "/big/\(name)", value: [])) }
        #expect(try await client.call(.directory(path: "/big")) == .error(.e2big))
        var collected: [String] = []
        var offset: UInt32 = 0
        var generation: String?
        var chunks = 0
        while true {
            let reply = try await client.call(.directoryPart(path: "/big", offset: offset))
            guard case .directoryPart(let gen, let children, let complete) = reply else {
                Issue.record("unexpected \(reply)")
                return
            }
            #expect(generation == nil || generation == gen)
            generation = gen
            collected += children
            offset += UInt32(children.reduce(0) { $0 + $1.utf8.count + 1 })
            chunks += 1
            if complete { break }
        }
        #expect(collected == names)
        #expect(chunks >= 2)
        _ = try await client.call(.write(path: "/big/another", value: []))
        let after = try await client.call(.directoryPart(path: "/big", offset: 0))
        guard case .directoryPart(let newGeneration, _, _) = after else {
            Issue.record("DIRECTORY_PART after a change answered \(after)")
            return
        }
        #expect(newGeneration != generation)
        #expect(
            try await client.call(.directoryPart(path: "/big", offset: 100_000))
                == .directoryPart(generation: newGeneration, children: [], complete: true))
    }
}

@Suite struct DomainAPITests {
    @Test func introduceAndReleaseFireWatches() async throws {
        let server = XenStoreServer()
        let client = TestClient(server.connect())
        _ = try await client.call(.watch(path: "@introduceDomain", token: "in"))
        _ = try await client.call(.watch(path: "@releaseDomain", token: "out"))
        _ = try await client.drainEvents()
        #expect(!server.isDomainIntroduced(4))
        server.introduceDomain(4, gfn: 0x1234, port: 5)
        #expect(server.isDomainIntroduced(4))
        #expect(try await client.call(.isDomainIntroduced(domain: 4)) == .isDomainIntroduced(true))
        #expect(server.releaseDomain(4))
        #expect(!server.releaseDomain(4))
        #expect(!server.releaseDomain(0))
        #expect(try await client.drainEvents() == [event("@introduceDomain", "in"), event("@releaseDomain", "out")])
    }

    @Test func inspectionHelpers() async throws {
        let server = XenStoreServer()
        let client = TestClient(server.connect(domain: 0))
        _ = try await client.call(.write(path: "/p/q", value: Array("v".utf8)))
        #expect(server.value(at: "/p/q") == Array("v".utf8))
        #expect(server.children(of: "/p") == ["q"])
        #expect(server.permissions(at: "/p")?.owner == 0)
        #expect(server.nodeCount == 3)
        #expect(server.value(at: "/none") == nil)
    }
}

extension XenStoreHeader {
    var bytes: [UInt8] {
        var buffer: [UInt8] = []
        encode(into: &buffer)
        return buffer
    }
}
