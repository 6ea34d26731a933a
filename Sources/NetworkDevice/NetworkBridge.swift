/// Forwards every frame between two devices (a backend and a TAP device, two frontends in a test), with
/// its checksum and GSO metadata. A frame the receiving side refuses (too large, not connected, an offload it
/// cannot take) is counted in the bridge's `txDropped` rather than lost silently.
///
/// OCaml: none (qubes-mirage-firewall's forwarding loop plays this part)
public enum NetworkBridge {
    /// Copies frames from `source` to `destination` until `source`'s sequence ends or the task is cancelled.
    /// Returns the number of frames forwarded.
    ///
    /// OCaml: none
    @discardableResult
    public static func forward(
        from source: any NetworkDevice, to destination: any NetworkDevice, counters: NetworkCounters? = nil
    )
        async -> Int
    {
        var forwarded = 0
        for await frame in source.listen(headerSize: 0) {
            do {
                try await destination.write(frame)
                forwarded += 1
            } catch .cancelled {
                break
            } catch {
                counters?.count(\.txDropped)
            }
        }
        return forwarded
    }

    /// Forwards both ways until either side's sequence ends or the task is cancelled, counting the frames
    /// forwarded (`txPackets`, `txBytes` are not kept: each device counts its own) and refused (`txDropped`)
    /// in `counters`.
    ///
    /// OCaml: none
    public static func connect(
        _ first: any NetworkDevice, _ second: any NetworkDevice, counters: NetworkCounters? = nil
    ) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await forward(from: first, to: second, counters: counters) }
            group.addTask { await forward(from: second, to: first, counters: counters) }
            _ = await group.next()
            group.cancelAll()
        }
    }
}
