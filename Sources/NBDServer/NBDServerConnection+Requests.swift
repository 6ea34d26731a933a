import BlockDevice
import NBDProtocol
import XenCore

// Running requests against the device. Reads the device can answer at once are answered on the connection
// thread; everything else runs as a task on that thread (it is their executor), so the device's completion
// and the reply go out without a hop.
// Once the thread is gone a task finishes on the global pool (its reply is dropped).
extension NBDServerConnection {
    /// Starts a checked request other than WRITE (whose payload comes first) and DISC.
    func start(_ operation: NBDServerOperation, _ header: NBDRequestHeader, _ transmission: NBDTransmission) {
        let (device, sectorSize, session) = (transmission.device, transmission.sectorSize, transmission.session)
        switch operation {
        case .read(let offset, let length, let dontFragment):
            let sparse =
                session.structuredReplies && !dontFragment && length >= UInt64(server.options.sparseReadMinimum)
            if !sparse, let minimum = server.options.zeroCopyReadMinimum, length >= UInt64(max(1, minimum)),
                let range = device.cachedFileRange(at: offset / UInt64(sectorSize), count: length / UInt64(sectorSize))
            {
                // Sent from the page cache by the kernel: no buffer, so nothing held but the queued reply.
                begin(bytes: 0)
                let bytes = session.dataReplyHeader(
                    cookie: header.cookie, requestOffset: offset, dataOffset: offset, length: length, done: true)
                reply(header: bytes, file: range)
                return
            }
            let buffer = server.pool.buffer(count: Int(length))
            begin(bytes: buffer.count)
            if length == 0 || (!sparse && device.readWithoutWaiting(at: offset / UInt64(sectorSize), into: [buffer])) {
                reply(items: Self.dataReply(session, header, buffer), bytes: buffer.count)
                return
            }
            Task(executorPreference: executor) {
                await self.read(header, buffer: buffer, sparse: sparse, device, sectorSize, session)
            }
        case .cache:
            // A hint: the device's own cache does the rest (the spec lets a server do nothing).
            begin(bytes: 0)
            reply(items: [(session.okReply(cookie: header.cookie, offset: header.offset), [])], bytes: 0)
        default:
            begin(bytes: 0)
            Task(executorPreference: executor) {
                await self.perform(operation, header, payload: nil, device, sectorSize, session)
            }
        }
    }

    /// Runs a request that has no data to send back, then queues its reply.
    func perform(
        _ operation: NBDServerOperation, _ header: NBDRequestHeader, payload: PageBuffer?, _ device: any BlockDevice,
        _ sectorSize: Int, _ session: NBDServerSession
    ) async {
        let size = UInt64(sectorSize)
        var items: [([UInt8], [PageBuffer])] = []
        do throws(BlockError) {
            switch operation {
            case .write(let offset, _, let fua):
                try await device.write(
                    at: offset / size, from: [payload ?? PageBuffer(pages: 1).slice(from: 0, count: 0)])
                if fua { try await device.flush() }
            case .flush:
                try await device.flush()
            case .trim(let offset, let length, let fua):
                // Trimming is advisory: a device that cannot discard has done what was asked.
                do { try await device.discard(at: offset / size, count: length / size) } catch .unimplemented {}
                if fua { try await device.flush() }
            case .writeZeroes(let offset, let length, let fua, let noHole, let fast):
                try await device.writeZeroes(at: offset / size, count: length / size, unmap: !noHole, fast: fast)
                if fua { try await device.flush() }
            case .blockStatus(let offset, let length, let one):
                let extents = try await Self.extents(
                    device, sectorSize, session, offset: offset, length: length, one: one)
                items = [(session.blockStatusReply(cookie: header.cookie, requestOffset: offset, extents: extents), [])]
            case .read, .cache, .disconnect:
                break
            }
            if items.isEmpty { items = [(session.okReply(cookie: header.cookie, offset: header.offset), [])] }
        } catch {
            items = [
                (session.errorReply(cookie: header.cookie, offset: header.offset, Self.refusal(error, operation)), [])
            ]
        }
        reply(items: items, bytes: payload?.count ?? 0)
    }

    /// A READ that waits for the device: whole, or for a long read on a device that knows its holes, data
    /// and hole chunks.
    private func read(
        _ header: NBDRequestHeader, buffer: PageBuffer, sparse: Bool, _ device: any BlockDevice, _ sectorSize: Int,
        _ session: NBDServerSession
    ) async {
        let size = UInt64(sectorSize)
        let sector = header.offset / size
        var items: [([UInt8], [PageBuffer])]
        do throws(BlockError) {
            if sparse, let extents = try await device.allocation(at: sector, count: UInt64(buffer.count) / size),
                extents.contains(where: \.isZero)
            {
                items = []
                var at = 0
                for extent in extents where at < buffer.count {
                    let length = min(Int(extent.sectors * size), buffer.count - at)
                    let offset = header.offset + UInt64(at)
                    if extent.isZero {
                        let hole = session.holeReply(
                            cookie: header.cookie, requestOffset: header.offset, holeOffset: offset,
                            length: UInt32(length), done: false)
                        items.append((hole, []))
                    } else {
                        let piece = buffer.slice(from: at, count: length)
                        try await device.read(at: offset / size, into: [piece])
                        let data = session.dataReplyHeader(
                            cookie: header.cookie, requestOffset: header.offset, dataOffset: offset,
                            length: UInt64(length), done: false)
                        items.append((data, [piece]))
                    }
                    at += length
                }
                if at < buffer.count {
                    // The map stopped short: read the rest as data.
                    let piece = buffer.slice(from: at, count: buffer.count - at)
                    try await device.read(at: (header.offset + UInt64(at)) / size, into: [piece])
                    let data = session.dataReplyHeader(
                        cookie: header.cookie, requestOffset: header.offset, dataOffset: header.offset + UInt64(at),
                        length: UInt64(piece.count), done: false)
                    items.append((data, [piece]))
                }
                items.append((session.doneReply(cookie: header.cookie, requestOffset: header.offset), []))
            } else {
                try await device.read(at: sector, into: [buffer])
                items = Self.dataReply(session, header, buffer)
            }
        } catch {
            let refusal = Self.refusal(error, .read(offset: header.offset, length: header.length, dontFragment: false))
            items = [(session.errorReply(cookie: header.cookie, offset: header.offset, refusal), [])]
        }
        reply(items: items, bytes: buffer.count)
    }

    /// The reply carrying a whole READ: a simple reply and the data, or one `OFFSET_DATA` chunk marked done
    /// (an empty read: just the final chunk).
    static func dataReply(_ session: NBDServerSession, _ header: NBDRequestHeader, _ buffer: PageBuffer)
        -> [([UInt8], [PageBuffer])]
    {
        if buffer.count == 0, session.structuredReplies {
            return [(session.doneReply(cookie: header.cookie, requestOffset: header.offset), [])]
        }
        let bytes = session.dataReplyHeader(
            cookie: header.cookie, requestOffset: header.offset, dataOffset: header.offset,
            length: UInt64(buffer.count), done: true)
        return [(bytes, [buffer])]
    }

    /// `base:allocation` extents from the device's map (all data when it has none), as the spec wants
    /// them: whole blocks, at least one, the first N-1 inside the request, one only with `REQ_ONE` (and
    /// then no longer than the request), each below 4 GiB without extended headers.
    static func extents(
        _ device: any BlockDevice, _ sectorSize: Int, _ session: NBDServerSession, offset: UInt64, length: UInt64,
        one: Bool
    ) async throws(BlockError) -> [NBDExtent] {
        let size = UInt64(sectorSize)
        let sector = offset / size
        let available = session.export.info.size / size - sector
        let count = min(available, max(1, (length + size - 1) / size))
        guard count > 0 else { throw .invalidRequest("block status at the end of the export") }
        let map = try await device.allocation(at: sector, count: count) ?? []
        var extents: [NBDExtent] = []
        var covered: UInt64 = 0
        let limit: UInt64 = session.extendedHeaders ? .max : UInt64(UInt32.max) / size * size
        for extent in map where extent.sectors > 0 && covered < length {
            let flags =
                (extent.isHole ? NBDAllocationFlags.hole.rawValue : 0)
                | (extent.isZero ? NBDAllocationFlags.zero.rawValue : 0)
            let bytes = extent.sectors * size
            if let last = extents.last, last.flags == flags, last.length <= limit - bytes {
                extents[extents.count - 1].length += bytes
            } else {
                extents.append(NBDExtent(length: min(bytes, limit), flags: flags))
            }
            covered += bytes
        }
        if extents.isEmpty { extents = [NBDExtent(length: min(count * size, limit), flags: 0)] }
        if one {
            let most = max(size, length / size * size)
            extents = [NBDExtent(length: min(extents[0].length, most), flags: extents[0].flags)]
        }
        return extents
    }

    /// The errno for a device failure.
    static func refusal(_ error: BlockError, _ operation: NBDServerOperation) -> NBDServerRefusal {
        switch error {
        case .isReadOnly: NBDServerRefusal(.eperm, error.description)
        case .invalidRequest: NBDServerRefusal(.einval, error.description)
        case .unimplemented:
            if case .writeZeroes(_, _, _, _, true) = operation {
                NBDServerRefusal(.enotsup, error.description)
            } else {
                NBDServerRefusal(.einval, error.description)
            }
        case .disconnected: NBDServerRefusal(.eshutdown, error.description)
        case .io: NBDServerRefusal(.eio, error.description)
        }
    }
}
