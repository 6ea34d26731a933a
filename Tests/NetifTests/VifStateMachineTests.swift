import NetifProtocol
import Testing
import XenCore

/// The vif backend's answers to every frontend sequence the xenbus protocol allows, including the ones
/// mirage-net-xen's backend gets wrong (close before connect, jump to Closed, runtime close, reconnect).
@Suite struct VifStateMachineTests {
    @Test func forwardHandshake() {
        var machine = VifBackendStateMachine()
        #expect(machine.frontendChanged(to: .initialising, online: true) == [.switchState(.initWait)])
        #expect(machine.frontendChanged(to: .initialised, online: true) == [])
        #expect(machine.frontendChanged(to: .connected, online: true) == [.connect, .switchState(.connected)])
        #expect(machine.isConnected && machine.state == .connected)
        #expect(machine.frontendChanged(to: .connected, online: true) == [], "a repeated event is idempotent")
    }

    @Test func closeCycleBeforeConnect() {
        // Windows' xenvif normalises the device first: Closing, Closed, then Initialising again.
        var machine = VifBackendStateMachine()
        #expect(machine.frontendChanged(to: .initialising, online: true) == [.switchState(.initWait)])
        #expect(machine.frontendChanged(to: .closing, online: true) == [.switchState(.closing)])
        #expect(machine.frontendChanged(to: .closed, online: true) == [.switchState(.closed)])
        #expect(machine.frontendChanged(to: .initialising, online: true) == [.switchState(.initWait)])
        #expect(machine.frontendChanged(to: .connected, online: true) == [.connect, .switchState(.connected)])
    }

    @Test func frontendJumpsToClosed() {
        var machine = VifBackendStateMachine()
        _ = machine.frontendChanged(to: .initialising, online: true)
        _ = machine.frontendChanged(to: .connected, online: true)
        #expect(
            machine.frontendChanged(to: .closed, online: true)
                == [.disconnect, .switchState(.closing), .switchState(.closed)])
        #expect(!machine.isConnected)
        // And reconnects: the same vif is served again.
        #expect(machine.frontendChanged(to: .initialising, online: true) == [.switchState(.initWait)])
        #expect(machine.frontendChanged(to: .connected, online: true) == [.connect, .switchState(.connected)])
    }

    @Test func orderlyCloseAndUnplug() {
        var machine = VifBackendStateMachine()
        _ = machine.frontendChanged(to: .initialising, online: true)
        _ = machine.frontendChanged(to: .connected, online: true)
        #expect(machine.frontendChanged(to: .closing, online: true) == [.disconnect, .switchState(.closing)])
        #expect(machine.frontendChanged(to: .closed, online: false) == [.switchState(.closed), .remove])
    }

    @Test func runtimeCloseRequestedByTheBackend() {
        var machine = VifBackendStateMachine()
        _ = machine.frontendChanged(to: .initialising, online: true)
        _ = machine.frontendChanged(to: .connected, online: true)
        #expect(machine.closeRequested() == [.disconnect, .switchState(.closing)])
        #expect(machine.frontendChanged(to: .closing, online: true) == [])
        #expect(machine.frontendChanged(to: .closed, online: true) == [.switchState(.closed)])
        #expect(machine.closeRequested() == [], "nothing left to close")
        var fresh = VifBackendStateMachine()
        #expect(fresh.closeRequested() == [])
        _ = fresh.frontendChanged(to: .initialising, online: true)
        #expect(fresh.closeRequested() == [.switchState(.closing)], "InitWait closes too")
    }

    @Test func frontendVanishes() {
        var machine = VifBackendStateMachine()
        _ = machine.frontendChanged(to: .initialising, online: true)
        _ = machine.frontendChanged(to: .connected, online: true)
        #expect(
            machine.frontendChanged(to: nil, online: true)
                == [.disconnect, .switchState(.closing), .switchState(.closed), .remove])
        var fresh = VifBackendStateMachine()
        #expect(fresh.frontendChanged(to: .unknown, online: true) == [.switchState(.closed), .remove])
    }

    @Test func everyFrontendStateFromEveryBackendStateEndsSomewhereLegal() {
        // From each reachable backend state, any frontend state yields only legal Linux transitions.
        let legal: Set<[XenbusState]> = [
            [.initialising, .initWait], [.initialising, .closed], [.initWait, .connected], [.initWait, .closing],
            [.connected, .closing], [.closing, .closed], [.closed, .initWait], [.closed, .closing],
        ]
        let setups: [[XenbusState?]] = [
            [], [.initialising], [.initialising, .connected], [.initialising, .closing],
            [.initialising, .closing, .closed],
        ]
        for setup in setups {
            for next in XenbusState.allCases.map(Optional.some) + [nil] {
                var machine = VifBackendStateMachine()
                for state in setup { _ = machine.frontendChanged(to: state, online: true) }
                var previous = machine.state
                for action in machine.frontendChanged(to: next, online: true) {
                    guard case .switchState(let state) = action else { continue }
                    #expect(legal.contains([previous, state]), "\(setup) then \(String(describing: next))")
                    previous = state
                }
            }
        }
    }

    @Test func frontendStepForEachBackendState() {
        #expect(VifFrontendStep(backend: .initWait) == .publish)
        #expect(VifFrontendStep(backend: .initialising) == .wait)
        #expect(VifFrontendStep(backend: .connected) == .resetBackend)
        #expect(VifFrontendStep(backend: .closing) == .resetBackend)
        #expect(VifFrontendStep(backend: .closed) == .reinitialise)
        #expect(VifFrontendStep(backend: nil) == .fail)
    }
}
