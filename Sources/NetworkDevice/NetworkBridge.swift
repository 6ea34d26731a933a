/// Forwards every frame between two devices (a backend and a TAP device, two frontends in a test), with
/// its checksum and GSO metadata. A frame the receiving side refuses (too large, not connected) is counted
/// in the receiving side's `txDropped` rather than lost silently.
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

    /// Forwards both ways until either side's sequence ends or the task is cancelled.
    ///
    /// OCaml: none
    public static func connect(_ first: any NetworkDevice, _ second: any NetworkDevice) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await forward(from: first, to: second) }
            group.addTask { await forward(from: second, to: first) }
            _ = await group.next()
            group.cancelAll()
        }
    }
}
