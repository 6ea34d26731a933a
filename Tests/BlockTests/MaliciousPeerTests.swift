import BlkifProtocol
import BlockBack
import BlockDevice
import BlockFront
import EventChannel
import GrantTable
import SharedRing
import SimulatedHypervisor
import Testing
import XenCore

/// Scripted peers that write raw ring entries and indices: neither end may crash, hang or lose a request.
@Suite struct MaliciousPeerTests {
    enum BackendMisbehaviour: String, CaseIterable, Sendable {
        case unknownID, responseOverflow, badStatus, wrongOperation
    }

    /// A backend that answers the first request with garbage: the request fails, the device disconnects.
    @Test(arguments: BackendMisbehaviour.allCases)
    func maliciousBackend(_ misbehaviour: BackendMisbehaviour) async throws {
        let harness = try BlockHarness()
        let store = harness.store
        let nodes = harness.nodes
        try await nodes.create(in: store)
        let back = nodes.backendPath
        try await store.write([
            (back + "/sectors", "64"), (back + "/sector-size", "512"), (back + "/info", "0"),
            (back + "/state", XenbusState.initWait.xenstoreValue),
        ])
        let connecting = Task { try await harness.connectFront() }
        _ = try await store.waitForState(of: nodes.frontendPath) { $0 == .initialised }
        let refText = try #require(try await store.read(nodes.frontendPath + "/ring-ref"))
        let portText = try #require(try await store.read(nodes.frontendPath + "/event-channel"))
        let grants = harness.backDomain.grantTable
        let events = harness.backDomain.eventChannel
        let mapping = try grants.map(domain: harness.frontDomain.id, ref: GrantRef(refText)!, writable: true)
        let port = try events.bindInterdomain(remote: harness.frontDomain.id, remotePort: EventChannelPort(portText)!)
        try await store.write(back + "/state", XenbusState.connected.xenstoreValue)
        let front = try await connecting.value

        let reading = Task { () -> BlockError? in
            do throws(BlockError) {
                try await front.read(at: 0, into: [PageBuffer(pages: 1)])
                return nil
            } catch { return error }
        }
        // The scripted backend's view of the ring lives in this scope only: it is gone before the unmap below.
        do {
            var ring = try BackRing(
                attaching: mapping.buffer, geometry: try SharedRingGeometry(entrySize: Blkif.ringEntrySize, pages: 1))
            for await _ in events.notifications(port) {
                if try ring.unconsumedRequests() > 0 { break }
            }
            let request = try BlkifRequest.decode(copying: ring.nextRequestSlot())
            switch misbehaviour {
            case .unknownID:
                BlkifResponse(id: request.id &+ 1000, operation: 0, status: .okay).encode(
                    into: ring.nextResponseSlot()!)
                _ = ring.pushResponses()
            case .badStatus:
                let slot = ring.nextResponseSlot()!
                BlkifResponse(id: request.id, operation: 0, status: .okay).encode(into: slot)
                slot.setUInt16(77, at: 10)
                _ = ring.pushResponses()
            case .wrongOperation:
                BlkifResponse(id: request.id, operation: 1, status: .okay).encode(into: ring.nextResponseSlot()!)
                _ = ring.pushResponses()
            case .responseOverflow:
                mapping.buffer.setUInt32(40, at: 8)  // rsp_prod: 40 responses for 1 request
            }
        }
        try events.notify(port)
        let error = await reading.value
        guard case .io = error else {
            Issue.record("expected an I/O error, got \(String(describing: error))")
            return
        }
        guard case .protocolViolation = front.failure else {
            Issue.record("expected a protocol violation, got \(String(describing: front.failure))")
            return
        }
        await #expect(throws: BlockError.self) { try await front.read(at: 0, into: [PageBuffer(pages: 1)]) }
        _ = try await store.waitForState(of: nodes.frontendPath) { $0 == .closing }
        try await store.write(back + "/state", XenbusState.closed.xenstoreValue)
        await front.disconnect()
        try events.unbind(port)
        try mapping.unmap()
    }

    /// A frontend writing hostile requests gets an error response for each; the backend keeps serving, and
    /// stops (Closed) when the frontend corrupts the request index.
    @Test func maliciousFrontend() async throws {
        let harness = try BlockHarness()
        let store = harness.store
        let nodes = harness.nodes
        let device = MemoryBlockDevice(sizeSectors: 64)
        let serving = try await harness.startBackend(device)
        _ = try await store.waitForState(of: nodes.backendPath) { $0 == .initWait }
        let grants = harness.frontDomain.grantTable
        let events = harness.frontDomain.eventChannel
        let memory = PageBuffer(pages: 1)
        var ring = try FrontRing(
            initialising: memory, geometry: try SharedRingGeometry(entrySize: Blkif.ringEntrySize, pages: 1))
        let ringRef = try await grants.refs.get()
        try grants.grantAccess(ringRef, to: harness.backDomain.id, writable: true, page: memory)
        let port = try events.bindUnboundPort(remote: harness.backDomain.id)
        let data = PageBuffer(pages: 2)
        let writableRef = try await grants.refs.get()
        let readOnlyRef = try await grants.refs.get()
        try grants.grantAccess(writableRef, to: harness.backDomain.id, writable: true, page: data.pages[0])
        try grants.grantAccess(readOnlyRef, to: harness.backDomain.id, writable: false, page: data.pages[1])
        try await store.write([
            (nodes.frontendPath + "/ring-ref", String(ringRef.rawValue)),
            (nodes.frontendPath + "/event-channel", String(port.rawValue)),
            (nodes.frontendPath + "/protocol", "x86_64-abi"),
            (nodes.frontendPath + "/state", XenbusState.initialised.xenstoreValue),
        ])
        _ = try await store.waitForState(of: nodes.backendPath) { $0 == .connected }

        let segment = BlkifSegment(grant: writableRef)
        var expected: [UInt64: BlkifStatus] = [:]
        func raw(_ id: UInt64, _ status: BlkifStatus, _ fill: (PageBuffer) -> Void) {
            let slot = ring.nextRequestSlot()!
            slot.fill(0)
            slot.setUInt64(id, at: 8)
            fill(slot)
            expected[id] = status
        }
        func request(_ id: UInt64, _ status: BlkifStatus, _ request: BlkifRequest) {
            raw(id, status) { request.encode(into: $0) }
        }
        raw(1, .error) { $0.setUInt8(9, at: 0) }  // unknown operation
        raw(2, .error) {  // READ with last_sect 9
            $0.setUInt8(0, at: 0)
            $0.setUInt8(1, at: 1)
            $0.setUInt32(writableRef.rawValue, at: 24)
            $0.setUInt8(9, at: 29)
        }
        request(3, .error, .direct(.init(operation: .read, handle: 0, id: 3, sector: 60, segments: [segment])))
        request(
            4, .error, .direct(.init(operation: .read, handle: 0, id: 4, sector: 0, segments: [.init(grant: 1999)])))
        request(
            5, .error,
            .direct(.init(operation: .read, handle: 0, id: 5, sector: 0, segments: [.init(grant: readOnlyRef)])))
        request(
            6, .error,
            .indirect(
                .init(operation: .read, segmentCount: 5000, handle: 0, id: 6, sector: 0, indirectGrants: [writableRef]))
        )
        request(
            7, .error,
            .indirect(.init(operation: .read, segmentCount: 8, handle: 0, id: 7, sector: 0, indirectGrants: [1999])))
        request(
            8, .error, .direct(.init(operation: .read, handle: 0, id: 8, sector: UInt64.max - 3, segments: [segment])))
        request(
            9, .okay,
            .direct(.init(operation: .write, handle: 0, id: 9, sector: 8, segments: [.init(grant: readOnlyRef)])))
        request(10, .okay, .direct(.init(operation: .read, handle: 0, id: 10, sector: 0, segments: [segment])))
        request(11, .okay, .direct(.init(operation: .flushDiskCache, handle: 0, id: 11, sector: 0, segments: [])))
        request(12, .error, .discard(.init(handle: 0, id: 12, sector: 60, sectorCount: 100)))
        // A valid indirect WRITE: one descriptor (whole 4 KiB page) in a read-only granted indirect page.
        let indirectPage = PageBuffer(pages: 1)
        indirectPage.setUInt32(writableRef.rawValue, at: 0)
        indirectPage.setUInt8(0, at: 4)
        indirectPage.setUInt8(7, at: 5)
        let indirectRef = try await grants.refs.get()
        try grants.grantAccess(indirectRef, to: harness.backDomain.id, writable: false, page: indirectPage)
        request(
            13, .okay,
            .indirect(
                .init(operation: .write, segmentCount: 1, handle: 0, id: 13, sector: 16, indirectGrants: [indirectRef]))
        )
        if ring.pushRequests() { try events.notify(port) }

        var answered: [UInt64: BlkifStatus] = [:]
        var echoed: [UInt64: UInt8] = [:]
        for await _ in events.notifications(port) {
            _ = try ring.consumeResponses { slot in
                if let response = try? BlkifResponse.decode(from: slot) {
                    answered[response.id] = response.status
                    echoed[response.id] = response.operation
                }
            }
            if answered.count == expected.count { break }
        }
        #expect(answered == expected)
        // Like Linux blkback, an indirect request is answered with its inner operation (Linux blkfront
        // rejects an echoed BLKIF_OP_INDIRECT).
        #expect(echoed[13] == BlkifOperation.write.rawValue)

        // Now corrupt req_prod: the backend stops serving and closes.
        memory.setUInt32(memory.uint32(at: 0) &+ 1000, at: 0)
        try events.notify(port)
        _ = try await store.waitForState(of: nodes.backendPath) { $0 == .closed }
        // The typed error comes after the release: serve returns only once Closed and unmapped.
        do {
            try await serving.value
            Issue.record("serve returned normally after the frontend broke its ring")
        } catch let error as BlockBackError {
            guard case .frontendBroke(let path, _) = error else {
                Issue.record("expected frontendBroke, got \(error)")
                return
            }
            #expect(path == nodes.frontendPath)
        }
        try events.unbind(port)
    }

    /// A backend that closes (or is removed) while a request is in flight: the request fails `.disconnected`.
    @Test func backendClosesUnderRequests() async throws {
        let harness = try BlockHarness()
        let store = harness.store
        let nodes = harness.nodes
        try await nodes.create(in: store)
        let back = nodes.backendPath
        try await store.write([
            (back + "/sectors", "64"), (back + "/sector-size", "512"),
            (back + "/state", XenbusState.initWait.xenstoreValue),
        ])
        let connecting = Task { try await harness.connectFront() }
        _ = try await store.waitForState(of: nodes.frontendPath) { $0 == .initialised }
        try await store.write(back + "/state", XenbusState.connected.xenstoreValue)
        let front = try await connecting.value
        // Listen on the frontend's event channel as its backend would: its first push notifies it.
        let portText = try #require(try await store.read(nodes.frontendPath + "/event-channel"))
        let remote = EventChannelPort(try #require(UInt32(portText)))
        let events = harness.backDomain.eventChannel
        let local = try events.bindInterdomain(remote: harness.frontDomain.id, remotePort: remote)
        var kicks = events.notifications(local).makeAsyncIterator()
        let reading = Task { () -> BlockError? in
            do throws(BlockError) {
                try await front.read(at: 0, into: [PageBuffer(pages: 1)])
                return nil
            } catch { return error }
        }
        // The request is on the ring (and never answered) before the backend goes away.
        #expect(await kicks.next() == local)
        try await store.remove(back)
        #expect(await reading.value == .disconnected)
        await front.disconnect()
    }

    /// A backend that gives up during the handshake: connect fails with a typed error and releases everything.
    @Test func backendClosesDuringHandshake() async throws {
        let harness = try BlockHarness()
        let store = harness.store
        let nodes = harness.nodes
        try await nodes.create(in: store)
        try await store.write(nodes.backendPath + "/state", XenbusState.initWait.xenstoreValue)
        let connecting = Task { () -> BlockFrontError? in
            do {
                _ = try await harness.connectFront()
                return nil
            } catch { return error as? BlockFrontError }
        }
        _ = try await store.waitForState(of: nodes.frontendPath) { $0 == .initialised }
        try await store.write(nodes.backendPath + "/state", XenbusState.closed.xenstoreValue)
        guard case .backendState(.closed, _) = await connecting.value else {
            Issue.record("expected a backend-state error")
            return
        }
        #expect(try await store.state(of: nodes.frontendPath) == .closed)
        let refs = harness.frontDomain.grantTable.refs
        #expect(refs.freeCount == refs.capacity)
    }
}
