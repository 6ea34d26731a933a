import Vchan
import XenCore

/// One end of a vchan (server or client) over its shared `vchan_interface` page, with a hostile peer that
/// writes any byte of the page (indices, orders, live and notify bytes, in-page ring bytes) between our
/// reads and writes. A client validates the orders the server wrote; a server lays its page out itself.
/// Reads must return exactly the bytes between our consumer and the peer's producer and publish the
/// consumer; writes must land at our producer and publish it; impossible indices, orders and live bytes must
/// be typed ``VchanError``s (protocol violations), never traps; an event is owed exactly when the peer asked
/// for it, and asking clears the request.
///
/// Input: a role byte, the orders (client) or minimum sizes (server), the four indices, the live and notify
/// bytes, then actions.
enum VchanRingTarget {
    typealias L = VchanLayout

    struct End {
        let role: VchanRole
        let page: PageBuffer
        let read: (data: PageBuffer, consumer: Int, producer: Int)
        let write: (data: PageBuffer, consumer: Int, producer: Int)
    }

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let role: VchanRole = input.bool() ? .server : .client
        let page = PageBuffer(pages: 1)
        let sizes: VchanRingSizes
        if role == .server {
            guard
                let chosen = try? VchanRingSizes.server(
                    readMinimum: Int(input.uint16()) * 4, writeMinimum: Int(input.uint16()) * 4)
            else { return }
            sizes = chosen
            let grants = (0..<sizes.grantCount).map { GrantRef(UInt32(8 + $0)) }
            VchanControlPage.initialiseServerPage(page, sizes: sizes, grants: grants)
            let control = VchanControlPage(page: page, role: role)
            require((try? control.ringSizes()) == sizes, "the server's page does not hold its orders")
            let listed = control.grants(for: sizes)
            require(listed.left + listed.right == grants, "the server's page does not hold its grants")
        } else {
            let left = input.uint16()
            let right = input.uint16()
            page.setUInt16(left, at: L.leftOrderOffset)
            page.setUInt16(right, at: L.rightOrderOffset)
            do throws(VchanError) {
                sizes = try VchanControlPage(page: page, role: role).ringSizes()
            } catch {
                return require(
                    error == .invalidRingOrders(left: Int(left), right: Int(right)), "orders \(left)/\(right): \(error)"
                )
            }
            require(
                VchanRingLocation(order: Int(left)) != nil && VchanRingLocation(order: Int(right)) != nil
                    && (left != right || left >= 12),
                "orders \(left)/\(right) accepted")
        }
        for offset in [L.leftConsumerOffset, L.leftProducerOffset, L.rightConsumerOffset, L.rightProducerOffset] {
            page.setUInt32(UInt32(input.uint16()), at: offset)
        }
        for offset in L.clientLiveOffset...L.serverNotifyOffset { page.setUInt8(input.byte(), at: offset) }
        let end = layout(role: role, page: page, sizes: sizes)
        let control = VchanControlPage(page: page, role: role)
        let receive: VchanReceiveRing
        let send: VchanSendRing
        do throws(VchanError) {
            receive = try VchanReceiveRing(control: control, data: end.read.data)
            send = try VchanSendRing(control: control, data: end.write.data)
        } catch {
            return require(error.isProtocolViolation, "attaching failed with \(error)")
        }
        drive(end, receive, send, &input)
    }

    /// Where this side's rings are: in the shared page (orders 10 and 11) or in pages of their own.
    static func layout(role: VchanRole, page: PageBuffer, sizes: VchanRingSizes) -> End {
        func ring(_ location: VchanRingLocation, size: Int) -> PageBuffer {
            switch location {
            case .inPage(let offset): page.slice(from: offset, count: size)
            case .external(let pages): PageBuffer(pages: pages)
            }
        }
        let left = ring(sizes.left, size: sizes.leftSize)
        let right = ring(sizes.right, size: sizes.rightSize)
        let leftRing = (left, L.leftConsumerOffset, L.leftProducerOffset)
        let rightRing = (right, L.rightConsumerOffset, L.rightProducerOffset)
        return role == .server
            ? End(role: role, page: page, read: leftRing, write: rightRing)
            : End(role: role, page: page, read: rightRing, write: leftRing)
    }

    static func drive(_ end: End, _ receive: VchanReceiveRing, _ send: VchanSendRing, _ input: inout FuzzInput) {
        var receive = receive
        var send = send
        let page = end.page
        while !input.isEmpty {
            switch input.byte() % 9 {
            case 0:  // the peer produces bytes on the ring we read
                let bytes = input.blob()
                let producer = page.uint32(at: end.read.producer)
                let mask = UInt32(end.read.data.count - 1)
                for (index, byte) in bytes.enumerated() {
                    end.read.data.setUInt8(byte, at: Int((producer &+ UInt32(index)) & mask))
                }
                page.setUInt32(producer &+ UInt32(bytes.count), at: end.read.producer)
            case 1:  // any index, any value
                let offsets = [
                    L.leftConsumerOffset, L.leftProducerOffset, L.rightConsumerOffset, L.rightProducerOffset,
                ]
                page.setUInt32(input.uint32(), at: offsets[Int(input.byte() % 4)])
            case 2:  // any byte of the page: header, grants, in-page rings
                page.setUInt8(input.byte(), at: Int(input.uint16()) % xenPageSize)
            case 3:  // the peer consumes some of what we wrote
                let consumer = page.uint32(at: end.write.consumer)
                let used = send.producer &- consumer
                if used <= UInt32(end.write.data.count) {
                    page.setUInt32(consumer &+ min(used, UInt32(input.uint16())), at: end.write.consumer)
                }
            case 4: read(&receive, end, maximum: 1 + Int(input.uint16()))
            case 5: write(&send, end, input.blob())
            case 6:
                let wanted = Int(input.uint16())
                if input.bool() {
                    if let ready = try? receive.available(requestingNotifyBelow: wanted), ready < wanted {
                        require(receive.control.notifyBytes.toPeer & L.notifyWrite != 0, "no write event asked for")
                    }
                } else if let space = try? send.space(requestingNotifyBelow: wanted), space < wanted {
                    require(send.control.notifyBytes.toPeer & L.notifyRead != 0, "no read event asked for")
                }
            case 7: liveBytes(end, &input)
            default:
                if let ready = try? receive.available() {
                    require(ready <= end.read.data.count, "\(ready) bytes ready in a ring of \(end.read.data.count)")
                }
                if let space = try? send.space() {
                    require(space <= end.write.data.count, "\(space) bytes free in a ring of \(end.write.data.count)")
                }
            }
        }
    }

    static func read(_ ring: inout VchanReceiveRing, _ end: End, maximum: Int) {
        let consumer = ring.consumer
        let producer = end.page.uint32(at: end.read.producer)
        let size = end.read.data.count
        let pending = producer &- consumer
        let requested = ring.control.notifyBytes.fromPeer & L.notifyRead
        var expected: [UInt8] = []
        if pending <= UInt32(size) {
            for index in 0..<min(Int(pending), maximum) {
                expected.append(end.read.data.uint8(at: Int((consumer &+ UInt32(index)) & UInt32(size - 1))))
            }
        }
        var buffer = [UInt8](repeating: 0, count: maximum)
        let outcome = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(VchanError) in try ring.read(into: raw) }
        }
        guard case .success(let (count, notify)) = outcome else {
            guard case .failure(let error) = outcome else { return }
            return require(
                pending > UInt32(size)
                    && error == .producerOutOfRange(producer: producer, consumer: consumer, size: size),
                "read refused a consistent ring (producer \(producer), consumer \(consumer)): \(error)")
        }
        require(pending <= UInt32(size), "read accepted producer \(producer) for consumer \(consumer)")
        require(Array(buffer.prefix(count)) == expected, "read \(count) bytes, the ring holds \(expected.count) others")
        require(ring.consumer == consumer &+ UInt32(count), "consumer did not advance by what was read")
        guard count > 0 else { return require(!notify, "an event owed for reading nothing") }
        require(end.page.uint32(at: end.read.consumer) == ring.consumer, "consumer not published")
        require(notify == (requested != 0), "event owed \(notify), the peer asked \(requested != 0)")
        require(ring.control.notifyBytes.fromPeer & L.notifyRead == 0, "the peer's read request not cleared")
    }

    static func write(_ ring: inout VchanSendRing, _ end: End, _ bytes: [UInt8]) {
        let producer = ring.producer
        let consumer = end.page.uint32(at: end.write.consumer)
        let size = end.write.data.count
        let used = producer &- consumer
        let requested = ring.control.notifyBytes.fromPeer & L.notifyWrite
        let outcome = bytes.withUnsafeBytes { raw in Result { () throws(VchanError) in try ring.write(raw) } }
        guard case .success(let (count, notify)) = outcome else {
            guard case .failure(let error) = outcome else { return }
            return require(
                used > UInt32(size) && error == .consumerOutOfRange(producer: producer, consumer: consumer, size: size),
                "write refused a consistent ring (producer \(producer), consumer \(consumer)): \(error)")
        }
        require(used <= UInt32(size), "write accepted consumer \(consumer) for producer \(producer)")
        require(count == min(bytes.count, size - Int(used)), "wrote \(count) of \(bytes.count)")
        for index in 0..<count {
            let at = Int((producer &+ UInt32(index)) & UInt32(size - 1))
            require(end.write.data.uint8(at: at) == bytes[index], "byte \(index) not in the ring")
        }
        require(ring.producer == producer &+ UInt32(count), "producer did not advance by what was written")
        guard count > 0 else { return require(!notify, "an event owed for writing nothing") }
        require(end.page.uint32(at: end.write.producer) == ring.producer, "producer not published")
        require(notify == (requested != 0), "event owed \(notify), the peer asked \(requested != 0)")
        require(ring.control.notifyBytes.fromPeer & L.notifyWrite == 0, "the peer's write request not cleared")
    }

    /// The peer's live byte: any value, read through the typed check; ours: published as set.
    static func liveBytes(_ end: End, _ input: inout FuzzInput) {
        let control = VchanControlPage(page: end.page, role: end.role)
        let peerOffset = end.role == .server ? L.clientLiveOffset : L.serverLiveOffset
        let ownOffset = end.role == .server ? L.serverLiveOffset : L.clientLiveOffset
        let raw = input.byte()
        end.page.setUInt8(raw, at: peerOffset)
        do throws(VchanError) {
            let state = try control.peerState()
            require(state.rawValue == raw && (end.role == .server || raw != 2), "live byte \(raw) read as \(state)")
        } catch {
            require(error == .invalidLiveState(raw) && (raw > 2 || (raw == 2 && end.role == .client)), "\(error)")
        }
        let own: VchanLiveState = input.bool() ? .connected : .exited
        control.setOwnState(own)
        require(end.page.uint8(at: ownOffset) == own.rawValue, "own live byte not published")
    }
}
