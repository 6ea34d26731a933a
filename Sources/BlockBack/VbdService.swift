import BackendTelemetry
import BlkifProtocol
import BlockDevice
import EventChannel
import GrantTable
import Logging
import XenCore
import Xenbus

/// One call of `BlockBack.serve`: the I/O half of the blkif handshake. It reads what the handshake depends on
/// (``VbdObservation``), feeds it to a `VbdBackendStateMachine`, and carries out the steps the machine returns
/// (advertise, connect, switch state, disconnect), until the machine has finished. Every decision is the
/// machine's; what is here is xenstore, grants, event channels and the queues.
///
/// OCaml: `Blkback.run`'s xenstore side
struct VbdService {
    let device: any BlockDevice
    let backendPath: String
    let frontendPath: String
    let store: any XenbusStore
    let grants: any GrantTableBackend
    let events: any EventChannelBackend
    let options: BlockBackOptions
    /// Gains the device's identity (`BackendTelemetry`) once the frontend's domain is known.
    var logger: Logger
    /// The frontend's domain directory, watched while no frontend is there yet.
    let frontendDomainDirectory: String?
    /// Set by a queue that finds its ring broken.
    let ringBreak = RingBreakSignal()

    /// Set by `advertise`.
    var telemetry: BackendTelemetry?
    var frontendID = DomainID(0)
    var info = BlockDeviceInfo(readWrite: false, sectorSize: Blkif.sectorUnit, sizeSectors: 0)
    var advertised = BlkifBackendInfo()
    var discardSupported = false
    /// Set by `connect`.
    var metrics: BlockBackMetrics?
    var persistent = false
    var ringPages = 0
    /// Set by `connect`, emptied by `disconnect`.
    var queues: [BackQueue] = []
    var tasks: [Task<Void, Never>] = []
    /// Grants `disconnect` could not release, reported once the connection is closed.
    var releaseFailures: [GrantTableError] = []

    init(
        device: any BlockDevice, backendPath: String, frontendPath: String, store: any XenbusStore,
        grants: any GrantTableBackend, events: any EventChannelBackend, options: BlockBackOptions, logger: Logger
    ) {
        self.device = device
        self.backendPath = backendPath
        self.frontendPath = frontendPath
        self.store = store
        self.grants = grants
        self.events = events
        self.options = options
        self.logger = logger
        self.frontendDomainDirectory = BlockBack.domainDirectory(of: frontendPath)
    }

    /// Serves one connection: observe, decide, act, until the machine has finished. A failure releases what is
    /// held (the machine's steps, carried out as far as they go) and is rethrown.
    mutating func run() async throws(BlockBackError) {
        var machine = VbdBackendStateMachine()
        var closedConnection = false
        do throws(BlockBackError) {
            while !machine.isFinished {
                let (next, actions) = try await nextSteps(after: machine)
                machine = next
                for action in actions {
                    if action == .finish { closedConnection = true }
                    try await perform(action, machine: &machine)
                }
            }
        } catch {
            for action in machine.failed() where action != .finish {
                try? await perform(action, machine: &machine)
            }
            // Whatever step failed, nothing stays mapped.
            if !queues.isEmpty { await disconnect() }
            throw error
        }
        guard closedConnection else { return }
        if !releaseFailures.isEmpty { throw .resources("releasing the frontend's grants: \(releaseFailures)") }
        if let reason = ringBreak.reason { throw .frontendBroke(path: frontendPath, reason: reason) }
        logger.debug("vbd closed")
    }

    /// Waits until what xenstore shows (or a broken ring) gives `machine` something to do; returns the
    /// machine that decided and its steps.
    private func nextSteps(
        after machine: VbdBackendStateMachine
    ) async throws(BlockBackError) -> (VbdBackendStateMachine, [VbdBackendAction]) {
        var paths = [frontendPath + "/state", backendPath + "/online", backendPath + "/state"]
        if machine.phase == .awaitingFrontend, let frontendDomainDirectory { paths.append(frontendDomainDirectory) }
        let store = store
        let backendPath = backendPath
        let frontendPath = frontendPath
        let domainDirectory = frontendDomainDirectory
        let ringBreak = ringBreak
        return try await xenstore(frontendPath) {
            try await store.wait(watching: paths) { () -> (VbdBackendStateMachine, [VbdBackendAction])? in
                var next = machine
                var actions = ringBreak.fired ? next.ringBroken() : []
                if actions.isEmpty {
                    let seen = try await Self.observe(
                        store: store, backendPath: backendPath, frontendPath: frontendPath,
                        domainDirectory: domainDirectory)
                    actions = next.observed(seen)
                }
                return actions.isEmpty ? nil : (next, actions)
            }
        }
    }

    /// Reads the keys the machine decides from; the frontend's domain directory only when the frontend has no
    /// state (the only time the machine looks at it).
    private static func observe(
        store: any XenbusStore, backendPath: String, frontendPath: String, domainDirectory: String?
    ) async throws -> VbdObservation {
        let online = try await store.read(backendPath + "/online") != "0"
        let frontend = try await store.state(of: frontendPath)
        var domainExists = true
        if frontend == nil {
            if let domainDirectory {
                domainExists = try await store.read(domainDirectory) != nil
            } else {
                domainExists = false
            }
        }
        let backend = try await store.state(of: backendPath)
        return VbdObservation(
            frontend: frontend, backend: backend, online: online, frontendDomainExists: domainExists)
    }

    /// Carries out one step of the machine.
    private mutating func perform(
        _ action: VbdBackendAction, machine: inout VbdBackendStateMachine
    ) async throws(BlockBackError) {
        switch action {
        case .advertise(let offer):
            try await advertise(offering: offer)
        case .connect:
            do throws(VbdConnectError) {
                try await connect()
            } catch {
                for step in machine.connectFailed(error.failure) { try? await perform(step, machine: &machine) }
                throw error.error
            }
        case .switchState(let state):
            let path = backendPath
            try await xenstore(path) { try await store.write(path + "/state", state.xenstoreValue) }
            if state == .connected, let metrics {
                metrics.connections.increment()
                logger.debug(
                    "vbd connected",
                    metadata: [
                        "queues": "\(queues.count)", "ring-pages": "\(ringPages)", "persistent-grants": "\(persistent)",
                    ])
            }
        case .disconnect:
            await disconnect()
        case .abandon:
            logger.debug(
                "vbd offline or its frontend gone or closed before connecting",
                metadata: ["frontend": "\(frontendPath)"])
            try? await store.write(backendPath + "/state", XenbusState.closed.xenstoreValue)
        case .finish:
            break
        }
    }
}
