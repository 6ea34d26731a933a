public import ConsoleBackend
import XenCore

extension SimulatedHost {
    /// Boots `guest`'s primary console as the domain builder does (the ring page granted as
    /// GNTTAB_RESERVED_CONSOLE, an unbound port, the `console` keys in xenstore) and returns the guest's end.
    /// `startIndex`, if given, is where all four ring indices start (a guest that has run a while).
    public func bootPrimaryConsole(_ guest: SimulatedGuest, startIndex: UInt32? = nil) async throws -> ConsoleFrontend {
        let (page, info) = try ConsoleFrontend.buildPrimaryRing(
            grantTable: guest.domain.grantTable, eventChannel: guest.domain.eventChannel)
        if let startIndex {
            for offset in [
                ConsoleRingLayout.inConsOffset, ConsoleRingLayout.inProdOffset, ConsoleRingLayout.outConsOffset,
                ConsoleRingLayout.outProdOffset,
            ] {
                page.setUInt32(startIndex, at: offset)
            }
        }
        try await ConsoleToolstack.createPrimary(domain: guest.id, ring: info, xenstore: dom0)
        return try ConsoleFrontend(
            primaryPage: page, port: info.port, domain: guest.id, eventChannel: guest.domain.eventChannel)
    }

    /// A console backend in dom0 for console `id`.
    public func consoleBackend(for id: ConsoleID) -> ConsoleBack {
        ConsoleBack(
            id: id, xenstore: dom0, grantTable: dom0Domain.grantTable, eventChannel: dom0Domain.eventChannel)
    }

    /// Creates extra console `devid` of `guest` (the toolstack's nodes, with `name` if given) and connects
    /// both ends: the guest's frontend and dom0's backend session. The guest must have its `device`
    /// directory (``makeGuest(name:introduce:)``).
    public func connectExtraConsole(
        _ guest: SimulatedGuest, devid: UInt32 = 1, name: String? = nil
    ) async throws -> (ConsoleFrontend, ConsoleBackSession) {
        let id = ConsoleID(domain: guest.id, device: .extra(devid))
        try await ConsoleToolstack.createDevice(id, name: name, xenstore: dom0)
        async let session = consoleBackend(for: id).connect()
        let frontend = try await ConsoleFrontend.connect(
            domain: guest.id, devid: devid, xenstore: guest.xenstore, gntshr: guest.domain.openGntshr(),
            eventChannel: guest.domain.eventChannel)
        return (frontend, try await session)
    }
}
