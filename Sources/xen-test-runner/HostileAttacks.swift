import BlkifProtocol
import BlockFront
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The blkif attacks of the hostile guest, one per console command (``HostileGuest``). Each returns the line
/// the guest reports (`key=value` words the dom0 checks read); what the backend must answer is decided here,
/// by the guest that wrote the requests.
enum HostileAttacks {
    /// The vbd's size in 512-byte sectors (dom0 serves a 4 MiB memory disk: ``HostileChecks/sectors``).
    static let sectors: UInt64 = 8192

    /// `blk MODE FRONT BACK`: one connection attempt in `mode`.
    static func blk(_ mode: String, front: String, back: String, devices: GuestDevices) async throws -> String {
        let offer: HostileConnection.RingOffer =
            switch mode {
            case "ring-never-granted": .neverGranted
            case "ring-read-only": .readOnly
            case "ring-bogus-port": .bogusPort
            default: .normal
            }
        let link = HostileConnection(devices: devices, front: front, back: back)
        // "requests-persistent": the same garbage with persistent grants negotiated (BlockBack's grant cache).
        link.persistent = mode.hasSuffix("-persistent")
        do {
            try link.setUp(offer)
            let state = try await link.offer()
            var result = "backend=\(state.map { "\($0)" } ?? "gone")"
            if state == .connected {
                switch mode {
                case "requests", "requests-persistent": result += " " + (try await requests(link))
                case "replay": result += " " + (try await replay(link))
                case "overflow": result += " " + (try await overflow(link))
                case "flip": result += " " + (try await flip(link))
                case "clean": result += " " + (try await clean(link))
                default: result += " unexpected-connect"
                }
            }
            try await link.close()
            return result
        } catch {
            link.release()
            throw error
        }
    }

    // MARK: - Garbage requests (steps 2 and 3)

    /// One request per kind of garbage, each with the status the backend must give, then a valid one; every
    /// request must be answered exactly once with its status.
    static func requests(_ link: HostileConnection) async throws -> String {
        let data = try unwrap(link.data, "no data pages")
        let page = data.refs[0]
        let readOnly = try unwrap(link.readOnly, "no read-only page").refs[0]
        let foreign = try unwrap(link.foreign, "no foreign page").refs[0]
        let indirect = data.buffer.pages[3]
        let goodIndirect = data.buffer.pages[2]
        var want: [UInt64: BlkifStatus] = [:]
        func raw(_ id: UInt64, _ status: BlkifStatus, _ fill: (PageBuffer) -> Void) throws {
            let slot = try link.nextSlot()
            slot.setUInt64(id, at: 8)
            fill(slot)
            want[id] = status
        }
        func direct(
            _ id: UInt64, _ status: BlkifStatus, _ op: BlkifOperation, sector: UInt64, _ segments: [BlkifSegment]
        )
            throws
        {
            try raw(id, status) {
                BlkifRequest.direct(.init(operation: op, handle: 0, id: id, sector: sector, segments: segments)).encode(
                    into: $0)
            }
        }
        func read(_ id: UInt64, _ status: BlkifStatus, _ ref: GrantRef, sector: UInt64 = 0) throws {
            try direct(id, status, .read, sector: sector, [BlkifSegment(grant: ref)])
        }
        func segments(_ id: UInt64, count: UInt8) throws {
            try raw(id, .error) {
                $0.setUInt8(BlkifOperation.read.rawValue, at: 0)
                $0.setUInt8(count, at: 1)
                for index in 0..<min(Int(count), 11) { BlkifSegment(grant: page).encode(into: $0, at: 24 + index * 8) }
            }
        }
        func indirectRequest(_ id: UInt64, _ status: BlkifStatus, count: Int, grant: GrantRef) throws {
            try raw(id, status) {
                BlkifRequest.indirect(
                    .init(
                        operation: .write, segmentCount: count, handle: 0, id: id, sector: 16, indirectGrants: [grant])
                ).encode(into: $0)
            }
        }
        try raw(1, .error) { $0.setUInt8(9, at: 0) }  // unknown operation
        try raw(2, .error) { $0.setUInt8(BlkifOperation.reserved1.rawValue, at: 0) }
        try direct(3, .error, .read, sector: 0, [BlkifSegment(grant: page, firstSector: 0, lastSector: 9)])
        try direct(4, .error, .read, sector: 0, [BlkifSegment(grant: page, firstSector: 5, lastSector: 2)])
        try segments(5, count: 12)
        try segments(6, count: 200)
        try segments(7, count: 0)
        try read(8, .error, page, sector: sectors - 4)  // runs past the end
        try read(9, .error, page, sector: UInt64.max - 3)  // wraps around
        try read(10, .error, HostileConnection.beyondTable)
        try read(11, .error, link.revoked)
        try read(12, .error, readOnly)  // the backend would have to write into it
        try read(13, .error, foreign)  // granted to domain 1000
        try direct(14, .okay, .write, sector: 8, [BlkifSegment(grant: readOnly)])  // reading it is allowed
        try read(15, .okay, page)
        try indirectRequest(16, .error, count: 5000, grant: data.refs[3])
        try indirectRequest(17, .error, count: 8, grant: HostileConnection.beyondTable)
        // Descriptor pages: page 3 holds a bad descriptor (first 7 > last 0), page 2 a good one (a whole page).
        indirect.fill(0)
        BlkifSegment(grant: page, firstSector: 7, lastSector: 0).encode(into: indirect, at: 0)
        goodIndirect.fill(0)
        BlkifSegment(grant: page).encode(into: goodIndirect, at: 0)
        try indirectRequest(18, .error, count: 1, grant: data.refs[3])
        try raw(19, .error) {  // an indirect READ whose descriptor page is the never-granted revoked ref
            BlkifRequest.indirect(
                .init(operation: .read, segmentCount: 1, handle: 0, id: 19, sector: 0, indirectGrants: [link.revoked])
            ).encode(into: $0)
        }
        try raw(20, .error) {  // indirect with an inner operation that is not READ or WRITE
            $0.setUInt8(BlkifOperation.indirect.rawValue, at: 0)
            $0.setUInt8(BlkifOperation.discard.rawValue, at: 1)
            $0.setUInt16(1, at: 2)
            $0.setUInt32(data.refs[3].rawValue, at: 28)
        }
        try raw(21, .error) {
            BlkifRequest.discard(.init(handle: 0, id: 21, sector: sectors - 1, sectorCount: 8)).encode(into: $0)
        }
        try direct(22, .okay, .flushDiskCache, sector: 0, [])
        try direct(23, .error, .write, sector: 0, [BlkifSegment(grant: HostileConnection.beyondTable)])
        try indirectRequest(24, .okay, count: 1, grant: data.refs[2])  // a valid indirect WRITE
        try link.publish()
        return try verdict(try await link.responses(), want: want)
    }

    /// "answered=N/M mismatches=..." ("none" when every request got exactly its status once).
    static func verdict(_ answers: [BlkifResponse], want: [UInt64: BlkifStatus]) throws -> String {
        var seen: [UInt64: [BlkifStatus]] = [:]
        for answer in answers { seen[answer.id, default: []].append(answer.status) }
        let wrong = want.keys.sorted().compactMap { id -> String? in
            seen[id] == [want[id]!] ? nil : "\(id):\(seen[id].map { "\($0)" } ?? "none")/\(want[id]!)"
        }
        let extra = seen.keys.filter { want[$0] == nil }.sorted().map { "\($0):unasked" }
        return
            "answered=\(answers.count)/\(want.count) mismatches=\(wrong.isEmpty && extra.isEmpty ? "none" : (wrong + extra).joined(separator: ","))"
    }

    // MARK: - Indices (step 1)

    /// The same valid READ (same id, same sector) in every slot, three ring-fulls: each must be answered, even
    /// after `rsp_prod` and `rsp_event` were overwritten with garbage; then `req_prod` rewound behind the
    /// responses: the backend must disconnect.
    static func replay(_ link: HostileConnection) async throws -> String {
        let page = try unwrap(link.data, "no data pages").refs[0]
        var okay = 0
        for round in 0..<3 {
            if round == 1 {
                try link.ring.setUInt32(0xDEAD_BEEF, at: 8)  // rsp_prod
                try link.ring.setUInt32(0x1234_5678, at: 12)  // rsp_event
            }
            for _ in 0..<HostileConnection.ringSize {
                BlkifRequest.direct(
                    .init(operation: .read, handle: 0, id: 7, sector: 0, segments: [.init(grant: page)])
                )
                .encode(into: try link.nextSlot())
            }
            try link.publish()
            let answers = try await link.responses()
            okay += answers.filter { $0.id == 7 && $0.status == .okay }.count
        }
        try link.publish(requestProducer: link.requestProducer &- 6)
        let after = try await link.backendLeftConnected(within: 60)
        return "replayed=\(link.requestProducer) okay=\(okay) rewound=\(after.map { "\($0)" } ?? "gone")"
    }

    /// One valid READ, then `req_prod` 1000 beyond it: the backend must disconnect.
    static func overflow(_ link: HostileConnection) async throws -> String {
        let page = try unwrap(link.data, "no data pages").refs[0]
        BlkifRequest.direct(.init(operation: .read, handle: 0, id: 1, sector: 0, segments: [.init(grant: page)]))
            .encode(into: try link.nextSlot())
        try link.publish()
        let first = try await link.responses().first?.status
        try link.publish(requestProducer: link.requestProducer &+ 1000)
        let after = try await link.backendLeftConnected(within: 60)
        return "first=\(first.map { "\($0)" } ?? "none") overflowed=\(after.map { "\($0)" } ?? "gone")"
    }

    /// Requests whose slots another thread keeps rewriting while the backend reads them (segment count 1 and
    /// 200, sectors valid and inverted): whatever the backend copied, it answers each once, OKAY or ERROR.
    static func flip(_ link: HostileConnection) async throws -> String {
        let page = try unwrap(link.data, "no data pages").refs[0]
        let ring = try link.ring
        let stop = StopFlag()
        // On a thread of its own: a busy loop on the cooperative pool would starve the guest's other tasks.
        let flipper = Task {
            await blocking {
                var flips = 0
                while !stop.raised {
                    for index in 0..<Int(HostileConnection.ringSize) {
                        let base = 64 + index * HostileConnection.entrySize
                        ring.setUInt8(flips % 2 == 0 ? 1 : 200, at: base + 1)
                        ring.setUInt8(flips % 3 == 0 ? 7 : 0, at: base + 28)  // first_sect of segment 0
                    }
                    flips += 1
                }
                return flips
            }
        }
        var answered = 0
        for _ in 0..<4 {
            for index in 0..<HostileConnection.ringSize {
                let id = UInt64(index)
                BlkifRequest.direct(
                    .init(operation: .read, handle: 0, id: id, sector: 0, segments: [.init(grant: page)])
                )
                .encode(into: try link.nextSlot())
            }
            try link.publish()
            answered += try await link.responses().count
        }
        stop.raise()
        let flips = await flipper.value
        return "flipped=\(flips) answered=\(answered)/\(4 * HostileConnection.ringSize)"
    }

    /// A well-behaved attempt: a pattern written to the disk and read back through other pages.
    static func clean(_ link: HostileConnection) async throws -> String {
        let data = try unwrap(link.data, "no data pages")
        let pages = data.buffer.pages
        for offset in stride(from: 0, to: xenPageSize, by: 8) {
            pages[0].setUInt64(0x5357_0000_0000 | UInt64(offset), at: offset)
        }
        pages[1].fill(0)
        BlkifRequest.direct(
            .init(operation: .write, handle: 0, id: 1, sector: 64, segments: [.init(grant: data.refs[0])])
        )
        .encode(into: try link.nextSlot())
        try link.publish()
        let wrote = try await link.responses()
        BlkifRequest.direct(
            .init(operation: .read, handle: 0, id: 2, sector: 64, segments: [.init(grant: data.refs[1])])
        )
        .encode(into: try link.nextSlot())
        try link.publish()
        let read = try await link.responses()
        let same = pages[1].contentsEqual(pages[0])
        return
            "write=\(wrote.first.map { "\($0.status)" } ?? "none") read=\(read.first.map { "\($0.status)" } ?? "none") "
            + "same=\(same)"
    }
}
