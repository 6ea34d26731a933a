import BlkifProtocol
import Testing
import XenCore

/// The vbd backend's answers to frontend and toolstack sequences, the orderly ones and the hostile ones: state
/// sequences in, steps out. `BlockBack.serve` carries these steps out (BlockReconnectTests and the BlockFront ↔
/// BlockBack tests run the same decisions against a real xenstore).
@Suite struct VbdStateMachineTests {
    /// What the backend sees: the frontend's state, its own, `online`, whether the frontend's domain exists.
    static func seen(
        _ frontend: XenbusState?, backend: XenbusState? = .initialising, online: Bool = true, domain: Bool = true
    ) -> VbdObservation {
        VbdObservation(frontend: frontend, backend: backend, online: online, frontendDomainExists: domain)
    }

    /// One observation and the steps it must yield.
    struct Step: Sendable {
        let seen: VbdObservation
        let actions: [VbdBackendAction]
        init(_ seen: VbdObservation, _ actions: [VbdBackendAction]) {
            self.seen = seen
            self.actions = actions
        }
    }

    /// A named sequence of observations, each with the steps it must yield, and the phase at the end.
    struct Scenario: Sendable, CustomTestStringConvertible {
        let name: String
        let steps: [Step]
        let end: VbdBackendPhase
        var testDescription: String { name }
    }

    static let close: [VbdBackendAction] = [.switchState(.closing), .disconnect, .switchState(.closed), .finish]
    static let connect: [VbdBackendAction] = [.connect, .switchState(.connected)]

    static let scenarios: [Scenario] = [
        Scenario(
            name: "the forward handshake, then the frontend closes",
            steps: [
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.initialising, backend: .initWait), []),
                Step(seen(.initialised, backend: .initWait), connect),
                Step(seen(.connected, backend: .connected), []),
                Step(seen(.closing, backend: .connected), close),
                Step(seen(.closed, backend: .closed), []),
            ], end: .finished),
        Scenario(
            name: "a frontend already Initialised when the backend starts",
            steps: [
                Step(seen(.initialised), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .initWait), connect),
            ], end: .connected),
        Scenario(
            name: "Connected without Initialised",
            steps: [
                Step(seen(.connected), [.advertise(offering: .initWait)]),
                Step(seen(.connected, backend: .initWait), connect),
                Step(seen(.connected, backend: .connected), []),
            ], end: .connected),
        Scenario(
            name: "a frontend rebound from Closed is offered Connected and may stay Closed",
            steps: [
                Step(seen(.closed, backend: .closed), [.advertise(offering: .connected)]),
                Step(seen(.closed, backend: .connected), []),
                Step(seen(.initialising, backend: .connected), []),
                Step(seen(.initialised, backend: .connected), connect),
                Step(seen(.connected, backend: .connected), []),
            ], end: .connected),
        Scenario(
            name: "a Closed frontend waits until the backend's previous connection is Closed too",
            steps: [
                Step(seen(.closed, backend: .initialising), []),
                Step(seen(.closed, backend: .closing), []),
                Step(seen(.closed, backend: .closed), [.advertise(offering: .connected)]),
            ], end: .offered(.connected)),
        Scenario(
            name: "Closed before Initialised",
            steps: [
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.closed, backend: .initWait), [.abandon]),
            ], end: .finished),
        Scenario(
            name: "Closing before Initialised",
            steps: [
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.closing, backend: .initWait), [.abandon]),
            ], end: .finished),
        Scenario(
            name: "a frontend flapping through Closing and Unknown before it starts is awaited",
            steps: [
                Step(seen(.closing), []), Step(seen(.unknown), []), Step(seen(.closing), []),
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.initWait, backend: .initWait), []), Step(seen(.reconfiguring, backend: .initWait), []),
                Step(seen(.unknown, backend: .initWait), []), Step(seen(.initialising, backend: .initWait), []),
                Step(seen(.initialised, backend: .initWait), connect),
            ], end: .connected),
        Scenario(
            name: "a connected frontend flapping to non-closing states keeps its connection",
            steps: [
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .initWait), connect),
                Step(seen(.initialising, backend: .connected), []), Step(seen(.initialised, backend: .connected), []),
                Step(seen(.unknown, backend: .connected), []), Step(seen(.reconfiguring, backend: .connected), []),
                Step(seen(.closed, backend: .connected), close),
            ], end: .finished),
        Scenario(
            name: "a frontend with no state is awaited while its domain exists",
            steps: [
                Step(seen(nil), []), Step(seen(nil), []),
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
            ], end: .offered(.initWait)),
        Scenario(
            name: "a frontend with no state whose domain is destroyed",
            steps: [Step(seen(nil), []), Step(seen(nil, domain: false), [.abandon])], end: .finished),
        Scenario(
            name: "a frontend path below no domain directory, with no state",
            steps: [Step(seen(nil, domain: false), [.abandon])], end: .finished),
        Scenario(
            name: "the frontend vanishes once offered",
            steps: [Step(seen(.initialising), [.advertise(offering: .initWait)]), Step(seen(nil), [.abandon])],
            end: .finished),
        Scenario(
            name: "the frontend vanishes while connected",
            steps: [
                Step(seen(.initialised), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .initWait), connect), Step(seen(nil, backend: .connected), close),
            ], end: .finished),
        Scenario(
            name: "offline before anything",
            steps: [Step(seen(.initialising, online: false), [.abandon])], end: .finished),
        Scenario(
            name: "offline beats a frontend in Closed",
            steps: [Step(seen(.closed, backend: .closed, online: false), [.abandon])], end: .finished),
        Scenario(
            name: "offline once offered",
            steps: [
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .initWait, online: false), [.abandon]),
            ], end: .finished),
        Scenario(
            name: "offline alone does not end a connection; the toolstack's Closing does",
            steps: [
                Step(seen(.initialised), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .initWait), connect),
                Step(seen(.connected, backend: .connected, online: false), []),
                Step(seen(.connected, backend: .closing, online: false), close),
            ], end: .finished),
        Scenario(
            name: "the toolstack's Closing once offered",
            steps: [
                Step(seen(.initialising), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .closing), [.abandon]),
            ], end: .finished),
        Scenario(
            name: "the toolstack's Closing once offered to a frontend in Closed",
            steps: [
                Step(seen(.closed, backend: .closed), [.advertise(offering: .connected)]),
                Step(seen(.closed, backend: .closing), [.abandon]),
            ], end: .finished),
        Scenario(
            name: "the toolstack removes the backend's directory while connected",
            steps: [
                Step(seen(.initialised), [.advertise(offering: .initWait)]),
                Step(seen(.initialised, backend: .initWait), connect), Step(seen(.connected, backend: nil), close),
            ], end: .finished),
    ]

    @Test(arguments: scenarios) func scenario(_ scenario: Scenario) {
        var machine = VbdBackendStateMachine()
        for (index, step) in scenario.steps.enumerated() {
            #expect(machine.observed(step.seen) == step.actions, "step \(index): \(step.seen)")
        }
        #expect(machine.phase == scenario.end)
    }

    /// A machine driven to `phase` through the orderly handshake.
    static func machine(in phase: VbdBackendPhase) -> VbdBackendStateMachine {
        var machine = VbdBackendStateMachine()
        switch phase {
        case .awaitingFrontend: break
        case .offered(let offer):
            _ = machine.observed(offer == .connected ? seen(.closed, backend: .closed) : seen(.initialising))
        case .connected:
            _ = machine.observed(seen(.initialising))
            _ = machine.observed(seen(.initialised, backend: .initWait))
        case .finished:
            _ = machine.observed(seen(.initialising, online: false))
        }
        #expect(machine.phase == phase)
        return machine
    }

    static let phases: [VbdBackendPhase] = [
        .awaitingFrontend, .offered(.initWait), .offered(.connected), .connected, .finished,
    ]

    @Test func aBrokenRingClosesOnlyAConnection() {
        for phase in Self.phases {
            var machine = Self.machine(in: phase)
            #expect(machine.ringBroken() == (phase == .connected ? Self.close : []), "\(phase)")
            #expect(machine.phase == (phase == .connected ? .finished : phase), "\(phase)")
        }
    }

    @Test func aFailedConnectAnnouncesClosingUnlessXenstoreFailed() {
        for (failure, expected) in [
            (VbdConnectFailure.frontendKeys, [VbdBackendAction.switchState(.closing)]),
            (.resources, [.switchState(.closing)]), (.xenstore, []),
        ] {
            var machine = Self.machine(in: .connected)
            #expect(machine.connectFailed(failure) == expected, "\(failure)")
            #expect(machine.isFinished)
            #expect(machine.connectFailed(failure) == [], "once finished, nothing more")
        }
        var waiting = Self.machine(in: .offered(.initWait))
        #expect(waiting.connectFailed(.resources) == [], "no connect was asked for")
    }

    @Test func aFailureReleasesAConnectionAndEndsEveryPhase() {
        for phase in Self.phases {
            var machine = Self.machine(in: phase)
            #expect(machine.failed() == (phase == .connected ? Self.close : []), "\(phase)")
            #expect(machine.isFinished, "\(phase)")
        }
    }

    @Test func everyObservationFromEveryPhaseKeepsTheInvariants() {
        // All frontend states (and none), backend states that matter, online or not, domain or not.
        let frontends = XenbusState.allCases.map(Optional.some) + [nil]
        let backends: [XenbusState?] = [nil, .initialising, .initWait, .connected, .closing, .closed]
        for phase in Self.phases {
            for frontend in frontends {
                for backend in backends {
                    for online in [true, false] {
                        for domain in [true, false] {
                            let observation = Self.seen(frontend, backend: backend, online: online, domain: domain)
                            var machine = Self.machine(in: phase)
                            let before = machine
                            let actions = machine.observed(observation)
                            Self.checkInvariants(from: before, to: machine, actions, observation)
                        }
                    }
                }
            }
        }
    }

    static func checkInvariants(
        from before: VbdBackendStateMachine, to after: VbdBackendStateMachine, _ actions: [VbdBackendAction],
        _ seen: VbdObservation
    ) {
        let context: Comment = "\(before.phase) + \(seen) → \(actions)"
        if actions.isEmpty {
            #expect(after == before, "an observation with no step changes nothing: \(context)")
            return
        }
        switch before.phase {
        case .awaitingFrontend:
            #expect(
                actions == [.abandon] || actions == [.advertise(offering: .initWait)]
                    || (actions == [.advertise(offering: .connected)] && seen.frontend == .closed
                        && seen.backend == .closed),
                context)
            if !seen.online { #expect(actions == [.abandon], context) }
        case .offered:
            #expect(actions == [.abandon] || actions == connect, context)
            if actions == connect { #expect(seen.frontend == .initialised || seen.frontend == .connected, context) }
        case .connected:
            #expect(actions == close, context)
        case .finished:
            Issue.record("a finished machine acted: \(context.rawValue)")
        }
        if actions.last == .abandon || actions.last == .finish { #expect(after.isFinished, context) }
    }
}
