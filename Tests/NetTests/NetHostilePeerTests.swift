import EventChannel
import GrantTable
import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SharedRing
import SimulatedHypervisor
import Testing
import XenCore

/// Scripted peers writing raw ring entries and indices: neither end traps or hangs; the one that sees the
/// violation reports it, tears the connection down, and (the backend) serves the next frontend.
@Suite struct NetHostilePeerTests {
    enum FrontendMisbehaviour: String, CaseIterable, Sendable {
        case fragmentOutsidePage, inconsistentSizes, tooManySlots, unknownExtraType, unknownFlags
        case requestProducerOverflow, rxRequestProducerOverflow, extraOnContinuation, gsoNotAdvertised
    }

    @Test(arguments: FrontendMisbehaviour.allCases)
    func hostileFrontend(_ misbehaviour: FrontendMisbehaviour) async throws {
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend {
            $0.features.gsoTCPv6 = false
        }
        let hostile = try await ScriptedFrontend(harness)
        try await hostile.connect()
        try await waitUntil { back.negotiated != nil }
        let page = hostile.buffers[0].ref
        switch misbehaviour {
        case .fragmentOutsidePage:
            try hostile.send { NetifTxRequest(grant: page, offset: 4000, flags: [], id: 0, size: 200).encode(into: $0) }
        case .inconsistentSizes:
            try hostile.send {
                NetifTxRequest(grant: page, offset: 0, flags: .moreData, id: 0, size: 100).encode(into: $0)
            }
            try hostile.send { NetifTxRequest(grant: page, offset: 0, flags: [], id: 1, size: 200).encode(into: $0) }
        case .tooManySlots:
            for id in 0..<19 {
                try hostile.send {
                    NetifTxRequest(grant: page, offset: 0, flags: .moreData, id: UInt16(id), size: 60000).encode(
                        into: $0)
                }
            }
        case .unknownExtraType:
            try hostile.send {
                NetifTxRequest(grant: page, offset: 0, flags: .extraInfo, id: 0, size: 60).encode(into: $0)
            }
            try hostile.send { slot in
                slot.setUInt8(9, at: 0)
                slot.setUInt8(0, at: 1)
            }
        case .unknownFlags:
            try hostile.send {
                NetifTxRequest(grant: page, offset: 0, flags: .init(rawValue: 0x100), id: 0, size: 60).encode(into: $0)
            }
        case .requestProducerOverflow:
            try hostile.lieAboutTxProducer(1000)
        case .rxRequestProducerOverflow:
            hostile.rx.memory.setUInt32(5000, at: 0)
            try harness.frontDomain.eventChannel.notify(hostile.port)
        case .extraOnContinuation:
            try hostile.send {
                NetifTxRequest(grant: page, offset: 0, flags: .moreData, id: 0, size: 200).encode(into: $0)
            }
            try hostile.send {
                NetifTxRequest(grant: page, offset: 0, flags: .extraInfo, id: 1, size: 100).encode(into: $0)
            }
        case .gsoNotAdvertised:
            try hostile.send {
                NetifTxRequest(grant: page, offset: 0, flags: .extraInfo, id: 0, size: 60).encode(into: $0)
            }
            try hostile.send { NetifExtraInfo(.gso(size: 1400, type: .tcpv6, features: 0)).encode(into: $0) }
        }
        // The backend drops this connection: Closing, rings unmapped, the reason kept.
        try await waitUntil { back.lastBreak != nil && back.negotiated == nil }
        #expect(try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 != .connected } == .closing)
        #expect(harness.hypervisor.grantMappingCount(granter: harness.frontDomain.id, ref: hostile.txRef) == 0)
        #expect(harness.hypervisor.grantMappingCount(granter: harness.frontDomain.id, ref: hostile.rxRef) == 0)
        // The frontend closes; the vif is then served to a well-behaved frontend.
        try await hostile.state(.closing)
        try await hostile.state(.closed)
        _ = try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 == .closed }
        let front = try await harness.connectFront()
        try await waitUntil { back.negotiated != nil }
        try await NetLifecycleTests.exchange(front, back, seed: 40)
        #expect(back.connectionCount == 2)
        try await harness.tearDown(front, back, serving)
    }

    @Test func frontendErrorsThatAreNotFatalAreAnsweredAndCounted() async throws {
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend()
        let hostile = try await ScriptedFrontend(harness)
        try await hostile.connect()
        try await waitUntil { back.negotiated != nil }
        // A grant that does not exist, and a runt: each answered ERROR, the connection stays.
        try hostile.send { NetifTxRequest(grant: 7777, offset: 0, flags: [], id: 3, size: 100).encode(into: $0) }
        try hostile.send {
            NetifTxRequest(grant: hostile.buffers[0].ref, offset: 0, flags: [], id: 4, size: 10).encode(into: $0)
        }
        try hostile.send {
            NetifTxRequest(grant: hostile.buffers[1].ref, offset: 8, flags: [], id: 5, size: 64).encode(into: $0)
        }
        var received = back.listen().makeAsyncIterator()
        #expect(try #require(await received.next()).data.count == 64)
        var statuses: [UInt16: NetifStatus] = [:]
        try await waitUntil { try hostile.tx.unconsumedResponses() == 3 }
        for _ in 0..<3 {
            let response = try NetifTxResponse.decode(from: hostile.tx.nextResponseSlot())
            statuses[response.id] = response.status
        }
        #expect(statuses == [3: .error, 4: .error, 5: .okay])
        #expect(back.statistics.rxErrors == 2 && back.lastBreak == nil && back.negotiated != nil)
        try await hostile.state(.closed)
        await back.disconnect()
        try await serving.value
    }

    @Test func badRingReferencesFailTheConnectNotTheBackend() async throws {
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend()
        _ = try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 == .initWait }
        let front = harness.nodes.frontendPath
        try await harness.frontStore.write([
            (front + "/tx-ring-ref", "1234"), (front + "/rx-ring-ref", "1235"), (front + "/event-channel", "9"),
            (front + "/request-rx-copy", "1"), (front + "/state", XenbusState.connected.xenstoreValue),
        ])
        #expect(try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 == .closing } == .closing)
        #expect(back.lastBreak?.hasPrefix("connect:") == true && back.negotiated == nil)
        try await harness.frontStore.write(front + "/state", XenbusState.closed.xenstoreValue)
        _ = try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 == .closed }
        let netfront = try await harness.connectFront()
        try await waitUntil { back.negotiated != nil }
        try await NetLifecycleTests.exchange(netfront, back, seed: 50)
        try await harness.tearDown(netfront, back, serving)
    }

    enum BackendMisbehaviour: String, CaseIterable, Sendable {
        case rxWrongID, rxOutsidePage, rxUnknownFlags, rxProducerOverflow, txUnknownID, txUnknownStatus
        case rxGSOPrefix, rxGSONotRequested
    }

    @Test(arguments: BackendMisbehaviour.allCases)
    func hostileBackend(_ misbehaviour: BackendMisbehaviour) async throws {
        let harness = try NetHarness()
        let initialFree = harness.frontDomain.grantTable.refs.freeCount
        let hostile = ScriptedBackend(harness)
        try await hostile.advertise()
        async let connecting = harness.connectFront {
            $0.closeTimeout = .milliseconds(200)
            $0.gsoTCPv6 = false
        }
        try await hostile.accept()
        let front = try await connecting
        let posted = try hostile.takeRxRequests()
        #expect(posted.count == 256, "every rx page is posted before Connected")
        let first = posted[0].request
        var listening = front.listen().makeAsyncIterator()
        switch misbehaviour {
        case .rxWrongID:
            try hostile.respondRx(NetifRxResponse(id: first.id &+ 1, offset: 0, flags: [], status: 60))
        case .rxOutsidePage:
            try hostile.respondRx(NetifRxResponse(id: first.id, offset: 4000, flags: [], status: 200))
        case .rxUnknownFlags:
            try hostile.respondRx(NetifRxResponse(id: first.id, offset: 0, flags: .init(rawValue: 0x80), status: 60))
        case .rxGSOPrefix:
            try hostile.respondRx(NetifRxResponse(id: first.id, offset: 0, flags: .gsoPrefix, status: 60))
        case .rxGSONotRequested:
            try hostile.respondRx(NetifRxResponse(id: first.id, offset: 0, flags: .extraInfo, status: 60))
            try hostile.respondRx { NetifExtraInfo(.gso(size: 1400, type: .tcpv6, features: 0)).encode(into: $0) }
        case .rxProducerOverflow:
            try hostile.lieAboutRxProducer(100_000)
        case .txUnknownID, .txUnknownStatus:
            try await front.write(NetworkFrame(data: testFrame(size: 100, seed: 1, from: front.mac, to: .broadcast)))
            try await hostile.answerTx { request, slot in
                if misbehaviour == .txUnknownID {
                    NetifTxResponse(id: request.id &+ 7, status: .okay).encode(into: slot)
                } else {
                    slot.setUInt16(request.id, at: 0)
                    slot.setUInt16(7, at: 2)
                }
            }
        }
        try await waitUntil { front.failure != nil }
        #expect(front.failure?.contains("broke the netif protocol") == true)
        #expect(await listening.next() == nil, "the frame sequence ends")
        await #expect(throws: NetworkError.self) {
            try await front.write(NetworkFrame(data: testFrame(size: 100, seed: 2, from: front.mac, to: .broadcast)))
        }
        // The frontend said it is leaving and gave back every grant, except the two ring pages the hostile
        // backend still maps: those refs are left out of the pool rather than reused under its feet.
        try await waitUntil { try await harness.store.state(of: harness.nodes.frontendPath) == .closed }
        try await waitUntil { harness.frontDomain.grantTable.refs.freeCount == initialFree - 2 }
        hostile.release()
    }
}
