import NetifProtocol
import Testing
import XenCore

/// Feature keys both ways, and the negotiation table for every combination of what each end offers.
@Suite struct NetifKeysTests {
    static func dictionary(_ pairs: [(String, String)]) -> [String: String] {
        Dictionary(pairs, uniquingKeysWith: { $1 })
    }

    @Test func backendFeaturesRoundTrip() throws {
        var features = NetifBackendFeatures()
        features.gsoTCPv6 = false
        features.maxQueues = 2
        let keys = Self.dictionary(features.keys)
        #expect(keys["feature-rx-copy"] == "1" && keys["feature-rx-flip"] == "0" && keys["feature-gso-tcpv6"] == "0")
        #expect(try NetifBackendFeatures(keys: keys) == features)
        // Linux netback's keys (it writes no no-csum-offload, no dynamic control off, and %u values).
        let linux = try NetifBackendFeatures(keys: [
            "feature-sg": "1", "feature-gso-tcpv4": "1", "feature-gso-tcpv6": "1", "feature-ipv6-csum-offload": "1",
            "feature-rx-copy": "1", "feature-rx-flip": "0", "feature-multicast-control": "1",
            "feature-dynamic-multicast-control": "1", "feature-split-event-channels": "1",
            "multi-queue-max-queues": "2\0", "feature-ctrl-ring": "1",
        ])
        #expect(linux.maxQueues == 2 && !linux.noChecksumOffload && linux.dynamicMulticastControl)
        // A backend that writes nothing offers nothing but one queue.
        let bare = try NetifBackendFeatures(keys: [:])
        #expect(!bare.scatterGather && !bare.gsoTCPv4 && !bare.rxCopy && bare.maxQueues == 1)
        #expect(throws: NetifKeyError.malformed(key: "feature-sg", value: "yes")) {
            try NetifBackendFeatures(keys: ["feature-sg": "yes"])
        }
        #expect(throws: NetifKeyError.malformed(key: "multi-queue-max-queues", value: "0")) {
            try NetifBackendFeatures(keys: ["multi-queue-max-queues": "0"])
        }
    }

    @Test func frontendRequestRoundTripOneAndTwoQueues() throws {
        let single = NetifFrontendRequest(queues: [
            .init(txRingRef: 8, rxRingRef: 9, txEventChannel: 5, rxEventChannel: nil)
        ])
        let keys = Self.dictionary(single.keys)
        #expect(keys["tx-ring-ref"] == "8" && keys["rx-ring-ref"] == "9" && keys["event-channel"] == "5")
        #expect(keys["multi-queue-num-queues"] == "1" && keys["request-rx-copy"] == "1")
        #expect(try NetifFrontendRequest(keys: keys, offered: NetifBackendFeatures()) == single)

        let split = NetifFrontendRequest(queues: [
            .init(txRingRef: 8, rxRingRef: 9, txEventChannel: 5, rxEventChannel: 6),
            .init(txRingRef: 10, rxRingRef: 11, txEventChannel: 7, rxEventChannel: 8),
        ])
        let splitKeys = Self.dictionary(split.keys)
        #expect(splitKeys["multi-queue-num-queues"] == "2" && splitKeys["queue-1/event-channel-rx"] == "8")
        #expect(splitKeys["tx-ring-ref"] == nil, "netif.h: no toplevel ring keys with two queues")
        #expect(try NetifFrontendRequest(keys: splitKeys, offered: NetifBackendFeatures()) == split)
    }

    @Test func frontendRequestsTheBackendMustRefuse() {
        var offer = NetifBackendFeatures()
        offer.maxQueues = 1
        offer.splitEventChannels = false
        let two = Self.dictionary(
            NetifFrontendRequest(queues: [
                .init(txRingRef: 1, rxRingRef: 2, txEventChannel: 3, rxEventChannel: nil),
                .init(txRingRef: 4, rxRingRef: 5, txEventChannel: 6, rxEventChannel: nil),
            ]).keys)
        #expect(throws: NetifKeyError.malformed(key: "multi-queue-num-queues", value: "2")) {
            try NetifFrontendRequest(keys: two, offered: offer)
        }
        let split = Self.dictionary(
            NetifFrontendRequest(queues: [.init(txRingRef: 1, rxRingRef: 2, txEventChannel: 3, rxEventChannel: 4)]).keys
        )
        #expect(throws: NetifKeyError.malformed(key: "event-channel-tx", value: "split channels not offered")) {
            try NetifFrontendRequest(keys: split, offered: offer)
        }
        var noCopy = split
        noCopy["request-rx-copy"] = nil
        #expect(throws: NetifKeyError.malformed(key: "request-rx-copy", value: "(absent)")) {
            try NetifFrontendRequest(keys: noCopy, offered: NetifBackendFeatures())
        }
        var missing = split
        missing["rx-ring-ref"] = nil
        #expect(throws: NetifKeyError.missing(key: "rx-ring-ref")) {
            try NetifFrontendRequest(keys: missing, offered: NetifBackendFeatures())
        }
        var bad = split
        bad["tx-ring-ref"] = "-1"
        #expect(throws: NetifKeyError.malformed(key: "tx-ring-ref", value: "-1")) {
            try NetifFrontendRequest(keys: bad, offered: NetifBackendFeatures())
        }
    }

    /// All 2^10 combinations of the five backend offers and five frontend requests that shape the data path.
    @Test func everyNegotiationCombination() throws {
        for bits in 0..<(1 << 10) {
            func on(_ bit: Int) -> Bool { bits & (1 << bit) != 0 }
            var offer = NetifBackendFeatures()
            offer.scatterGather = on(0)
            offer.gsoTCPv4 = on(1)
            offer.gsoTCPv6 = on(2)
            offer.ipv6ChecksumOffload = on(3)
            offer.multicastControl = on(4)
            var request = NetifFrontendRequest(
                queues: [.init(txRingRef: 1, rxRingRef: 2, txEventChannel: 3, rxEventChannel: nil)])
            request.scatterGather = on(5)
            request.gsoTCPv4 = on(6)
            request.noChecksumOffload = on(7)
            request.ipv6ChecksumOffload = on(8)
            request.requestMulticastControl = on(9)
            // What each side reads back from the other's keys gives the same table as the values themselves.
            let backSeen = try NetifBackendFeatures(keys: Self.dictionary(offer.keys))
            let frontSeen = try NetifFrontendRequest(keys: Self.dictionary(request.keys), offered: backSeen)
            let table = NetifNegotiated(backend: backSeen, frontend: frontSeen)
            #expect(table == NetifNegotiated(backend: offer, frontend: request))
            #expect(table.txScatterGather == on(0) && table.rxScatterGather == on(5))
            #expect(
                table.txGSO.contains(.tcpv4) == (on(0) && on(1)) && table.txGSO.contains(.tcpv6) == (on(0) && on(2)))
            #expect(table.rxGSO.contains(.tcpv4) == (on(5) && on(6)) && table.rxGSO.contains(.tcpv6) == on(5))
            #expect(table.txChecksumOffloadIPv4 && table.txChecksumOffloadIPv6 == on(3))
            #expect(table.rxChecksumOffloadIPv4 == !on(7) && table.rxChecksumOffloadIPv6 == on(8))
            #expect(table.multicastControl == (on(4) && on(9)))
            let mtu = 1500
            #expect(table.maxTxFrame(mtu: mtu) == (on(0) && (on(1) || on(2)) ? 65535 : 1514))
            #expect(table.maxRxFrame(mtu: mtu) == (on(5) ? 65535 : 1514), "the request keeps gso-tcpv6 on")
            let txLimits = NetifTxAssembler.Limits(table, multicastOffered: offer.multicastControl)
            #expect(txLimits.maxSlots == (on(0) ? 18 : 1))
            #expect(NetifRxAssembler.Limits(table).maxSlots == (on(5) ? 18 : 1))
        }
    }
}
