public import XenCore

// MARK: - Reading

extension VchanConnection {
    /// Waits for at least one byte and returns up to `maximum` of them (a partial read). Throws
    /// ``VchanError/peerClosed`` once the peer has gone and everything it sent was read.
    ///
    /// OCaml: `Vchan.Endpoint.read`; C: `libxenvchan_read` (blocking)
    public func read(maximum: Int = 65536) async throws(VchanError) -> [UInt8] {
        precondition(maximum > 0, "read needs room for at least one byte")
        var result: [UInt8] = []
        _ = try await receive(minimum: 1, maximum: maximum) { ring, _, count throws(VchanError) in
            var outcome: Result<(Int, Bool), VchanError> = .success((0, false))
            result = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialised in
                outcome = Result { () throws(VchanError) in try ring.read(into: UnsafeMutableRawBufferPointer(buffer)) }
                initialised = (try? outcome.get().0) ?? 0
            }
            return try outcome.get()
        }
        return result
    }

    /// Waits for at least one byte and copies up to `buffer.count` into `buffer`; returns how many (no
    /// allocation: the data path for large transfers).
    ///
    /// OCaml: `Vchan.Endpoint.read` (which returns a view of the ring instead); C: `libxenvchan_read`
    public func read(into buffer: PageBuffer) async throws(VchanError) -> Int {
        precondition(buffer.count > 0, "read needs room for at least one byte")
        return try await receive(minimum: 1, maximum: buffer.count) { ring, received, count throws(VchanError) in
            try ring.read(into: UnsafeMutableRawBufferPointer(start: buffer.pointer + received, count: count))
        }
    }

    /// Reads exactly `count` bytes, waiting as often as needed (they may exceed the ring); concurrent readers
    /// wait for the whole of it. Throws ``VchanError/peerClosed`` if the peer goes first.
    ///
    /// OCaml: none (`Mirage_channel.read_exactly`); C: `libxenvchan_recv` (which is limited to the ring size)
    public func read(exactly count: Int) async throws(VchanError) -> [UInt8] {
        precondition(count >= 0, "negative read")
        guard count > 0 else { return [] }
        var result = [UInt8](repeating: 0, count: count)
        _ = try await receive(minimum: count, maximum: count) { ring, received, chunk throws(VchanError) in
            let outcome = result.withUnsafeMutableBytes { raw in
                Result { () throws(VchanError) in
                    try ring.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[received..<received + chunk]))
                }
            }
            return try outcome.get()
        }
        return result
    }

    /// The receive loop: one turn, until `minimum` bytes arrived (at most `maximum`); `copy` moves `count`
    /// bytes out of the ring to the destination at `received` and answers (copied, notify the peer).
    private func receive(
        minimum: Int, maximum: Int,
        _ copy: (inout VchanReceiveRing, _ received: Int, _ count: Int) throws(VchanError) -> (Int, Bool)
    ) async throws(VchanError) -> Int {
        let ticket = inbound.withLock { $0.turns.take() }
        defer { if inbound.withLock({ $0.turns.finish(ticket) }) { gate.kick() } }
        var received = 0
        while true {
            let seen = gate.generation
            let step = inbound.withLock { half -> Step in
                if let failure = half.failure { return .fail(failure) }
                guard half.ring != nil else { return .fail(.closed) }
                guard half.turns.isServing(ticket) else { return .queued }
                do throws(VchanError) {
                    // The peer's state before the data: a peer writes its last bytes, then exits.
                    let state = try half.ring!.control.peerState()
                    let ready = try half.ring!.available(requestingNotifyBelow: minimum - received)
                    if ready > 0 {
                        let (count, notify) = try copy(&half.ring!, received, min(ready, maximum - received))
                        half.bytes &+= UInt64(count)
                        half.asleep = false
                        return .moved(count, notify: notify)
                    }
                    if state == .exited { return .fail(.peerClosed) }
                    half.asleep = true
                    return .wait
                } catch {
                    return .violation(error)
                }
            }
            guard case .moved(let count, let notify) = step else {
                try await settle(step, seen: seen)
                continue
            }
            if notify { signalPeer(afterRead: true) }
            received += count
            if received >= minimum { return received }
        }
    }
}

// MARK: - Writing

extension VchanConnection {
    /// Writes all of `bytes`, waiting for the peer to make room as often as needed; concurrent writers
    /// wait for the whole of it. Throws ``VchanError/peerClosed`` if the peer goes first.
    ///
    /// OCaml: `Vchan.Endpoint.write`; C: `libxenvchan_write` (blocking)
    public func write(_ bytes: some Collection<UInt8>) async throws(VchanError) {
        let data = Array(bytes)
        _ = try await send(total: data.count, whole: true) { ring, offset throws(VchanError) in
            try Self.write(data, from: offset, into: &ring)
        }
    }

    /// Writes all of `buffer` (no copy before the ring: the data path for large transfers).
    ///
    /// OCaml: `Vchan.Endpoint.write`; C: `libxenvchan_write`
    public func write(_ buffer: PageBuffer) async throws(VchanError) {
        _ = try await send(total: buffer.count, whole: true) { ring, offset throws(VchanError) in
            try ring.write(UnsafeRawBufferPointer(start: buffer.pointer + offset, count: buffer.count - offset))
        }
    }

    /// Waits for room for at least one byte, writes as much of `bytes` as fits and returns how many (a
    /// partial write).
    ///
    /// OCaml: none; C: `libxenvchan_write` on a non-blocking vchan, after `libxenvchan_wait`
    public func writeSome(_ bytes: some Collection<UInt8>) async throws(VchanError) -> Int {
        let data = Array(bytes)
        return try await send(total: data.count, whole: false) { ring, offset throws(VchanError) in
            try Self.write(data, from: offset, into: &ring)
        }
    }

    /// Copies what fits of `data[offset...]` into the ring.
    private static func write(
        _ data: [UInt8], from offset: Int, into ring: inout VchanSendRing
    ) throws(VchanError) -> (Int, Bool) {
        let outcome = data.withUnsafeBytes { raw in
            Result { () throws(VchanError) in try ring.write(UnsafeRawBufferPointer(rebasing: raw[offset...])) }
        }
        return try outcome.get()
    }

    /// The send loop: one turn; `put` copies what fits of the data from `offset` and answers (copied,
    /// notify the peer). A partial send returns after the first copy. Waiting longer than the stall timeout
    /// without room fails the connection.
    private func send(
        total: Int, whole: Bool,
        _ put: (inout VchanSendRing, _ offset: Int) throws(VchanError) -> (Int, Bool)
    ) async throws(VchanError) -> Int {
        guard total > 0 else { return 0 }
        let ticket = outbound.withLock { $0.turns.take() }
        defer { if outbound.withLock({ $0.turns.finish(ticket) }) { gate.kick() } }
        var sent = 0
        var waitingSince: ContinuousClock.Instant?
        while true {
            let seen = gate.generation
            let step = outbound.withLock { half -> Step in
                if let failure = half.failure { return .fail(failure) }
                guard half.ring != nil else { return .fail(.closed) }
                guard half.turns.isServing(ticket) else { return .queued }
                do throws(VchanError) {
                    if try half.ring!.control.peerState() == .exited { return .fail(.peerClosed) }
                    guard try half.ring!.space(requestingNotifyBelow: total - sent) > 0 else {
                        half.asleep = true
                        return .wait
                    }
                    let (count, notify) = try put(&half.ring!, sent)
                    half.bytes &+= UInt64(count)
                    half.asleep = false
                    return .moved(count, notify: notify)
                } catch {
                    return .violation(error)
                }
            }
            guard case .moved(let count, let notify) = step else {
                if case .wait = step {
                    // No room: the peer has this long to make some.
                    let now = ContinuousClock.now
                    if let limit = options.stallTimeout, let since = waitingSince, now - since >= limit {
                        fail(.peerStalled(waited: limit))
                        throw .peerStalled(waited: limit)
                    }
                    if waitingSince == nil { waitingSince = now }
                }
                try await settle(step, seen: seen)
                continue
            }
            if notify { signalPeer(afterRead: false) }
            sent += count
            waitingSince = nil
            if sent == total || !whole { return sent }
        }
    }
}

extension VchanConnection {
    /// Acts on a look that moved nothing: sleeps until the next kick (taken before the look: `seen`), or
    /// throws; a protocol violation fails the whole connection.
    fileprivate func settle(_ step: Step, seen: UInt64) async throws(VchanError) {
        switch step {
        case .moved: return
        case .wait, .queued:
            await gate.wait(after: seen)
            if Task.isCancelled { throw .cancelled }
        case .fail(let error):
            throw error
        case .violation(let error):
            fail(error)
            throw error
        }
    }
}

/// One look at a ring under its lock.
enum Step: Sendable {
    /// Bytes moved; whether the peer asked for an event.
    case moved(Int, notify: Bool)
    /// Nothing to do yet: sleep until the next kick.
    case wait
    /// Another caller holds the turn: sleep until the next kick.
    case queued
    /// This operation fails (closed, peer gone).
    case fail(VchanError)
    /// The peer broke the protocol: the connection fails.
    case violation(VchanError)
}
