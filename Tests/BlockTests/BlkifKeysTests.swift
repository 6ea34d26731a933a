import BlkifProtocol
import Testing
import XenCore

/// Xenstore key codecs and device names.
@Suite struct BlkifKeysTests {
    @Test func backendKeysRoundTrip() throws {
        var info = BlkifBackendInfo()
        info.sectors = 1 << 30
        info.sectorSize = 4096
        info.barrier = true
        info.discard = true
        info.discardGranularity = 4096
        info.persistent = true
        info.maxIndirectSegments = 512
        info.maxRingPageOrder = 3
        info.maxQueues = 8
        var keys: [String: String] = [:]
        for (key, value) in info.featureKeys + info.deviceKeys { keys[key] = value }
        keys["mode"] = "w"
        var parsed = try BlkifBackendInfo(keys: keys)
        parsed.physicalSectorSize = info.physicalSectorSize
        #expect(parsed == info)
        #expect(BlkifBackendInfo().featureKeys.contains { $0.0 == "feature-max-indirect-segments" } == false)
    }

    @Test func malformedBackendKeysAreErrors() throws {
        for (key, value) in [
            ("sectors", "lots"), ("sector-size", "1000"), ("mode", "rw"), ("max-ring-page-order", "99"),
            ("feature-max-indirect-segments", "-1"), ("multi-queue-max-queues", "0"),
        ] {
            #expect(throws: BlkifKeyError.self, "\(key)=\(value)") { try BlkifBackendInfo(keys: [key: value]) }
        }
        #expect(try BlkifBackendInfo(keys: ["max-ring-pages": "4"]).maxRingPageOrder == 2)
        #expect(try BlkifBackendInfo(keys: ["mode": "r"]).isWritable == false)
        #expect(try BlkifBackendInfo(keys: ["info": "4"]).isWritable == false)
    }

    @Test func frontendKeysSingleAndMultiQueue() throws {
        let single = BlkifFrontendInfo(
            queues: [BlkifQueueInfo(ringRefs: [8], eventChannel: 3)], ringPageOrder: 0, persistent: true)
        #expect(single.keys.map(\.0) == ["protocol", "feature-persistent", "ring-ref", "event-channel"])
        let multi = BlkifFrontendInfo(
            queues: [
                BlkifQueueInfo(ringRefs: [8, 9], eventChannel: 3), BlkifQueueInfo(ringRefs: [10, 11], eventChannel: 4),
            ], ringPageOrder: 1, persistent: false)
        var keys: [String: String] = [:]
        for (key, value) in multi.keys { keys[key] = value }
        #expect(keys["queue-1/ring-ref1"] == "11" && keys["multi-queue-num-queues"] == "2")
        #expect(try BlkifFrontendInfo(keys: keys, maxRingPageOrder: 4, maxQueues: 4) == multi)
        #expect(throws: BlkifKeyError.self) { try BlkifFrontendInfo(keys: keys, maxRingPageOrder: 0, maxQueues: 4) }
        #expect(throws: BlkifKeyError.self) { try BlkifFrontendInfo(keys: keys, maxRingPageOrder: 4, maxQueues: 1) }
        keys["queue-0/event-channel"] = "x"
        #expect(throws: BlkifKeyError.self) { try BlkifFrontendInfo(keys: keys, maxRingPageOrder: 4, maxQueues: 4) }
        #expect(throws: BlkifKeyError.self) {
            try BlkifFrontendInfo(
                keys: ["protocol": "x86_32-abi", "ring-ref": "8", "event-channel": "1"], maxRingPageOrder: 0,
                maxQueues: 1)
        }
    }

    @Test(
        arguments: [
            ("51712", UInt32(51712)), ("xvda", 51712), ("/dev/xvda", 51712), ("xvdb1", 51729),
            ("xvdq", (1 << 28) | (16 << 8)),
            ("sda", 2048), ("sdb2", 2066), ("hda", 768), ("hdc", 5632),
        ] as [(String, UInt32)])
    func deviceNames(name: String, number: UInt32) {
        #expect(VirtualDeviceNumber.parse(name) == number)
    }

    @Test func badDeviceNames() {
        for name in ["", "xvd", "floppy", "xvdA", "sdq", "hde"] {
            #expect(VirtualDeviceNumber.parse(name) == nil, "\(name)")
        }
    }
}
