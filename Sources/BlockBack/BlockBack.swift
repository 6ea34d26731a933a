import BackendTelemetry
import BlkifProtocol
public import BlockDevice
public import EventChannel
public import GrantTable
import Logging
import SharedRing
import Synchronization
import XenCore
public import Xenbus

/// A Xen block backend: serves any `BlockDevice` to one frontend over blkif rings.
///
/// It advertises every feature of blkif.h (flush, barrier, discard, persistent grants, indirect descriptors,
/// multi-page rings, multi-queue), follows the whole xenbus handshake, and treats the frontend as hostile:
/// each request is copied out of the ring once and validated, grant mapping failures and bad ranges get
/// error responses, and mappings are released before the response is written.
///
/// OCaml: `Blkback.Make(...).run`
public enum BlockBack {
    /// Serves `device` at the backend directory `backendPath` until the frontend closes (or disappears) or the
    /// toolstack detaches the device (backend `state` set to Closing), then goes Closing → Closed and releases
    /// everything. Returns normally on a clean close; throws `.frontendBroke` (after the same release) when the
    /// frontend corrupted a ring. Called again on the same directory it waits for the
    /// frontend to reinitialise and serves the new connection (a guest reloading its driver).
    ///
    /// Every handshake decision is `BlkifProtocol`'s `VbdBackendStateMachine`: this function reads the keys it
    /// decides from (the frontend's and the backend's `state`, `online`, the frontend's domain directory),
    /// waits on them in xenstore, and carries out the steps it returns (advertise, map the rings and bind the
    /// event channels, write the state, release).
    ///
    /// Logs through `options.logger` and counts in `options.metricsFactory` (the "Metrics" article).
    ///
    /// OCaml: `Blkback.run t name (domid, devid)`
    public static func serve(
        _ device: any BlockDevice, backendPath: String, store: any XenbusStore, grants: any GrantTableBackend,
        events: any EventChannelBackend, options: BlockBackOptions
    ) async throws(BlockBackError) {
        var logger = options.logger
        logger[metadataKey: "xen.path"] = .string(backendPath)
        do throws(BlockBackError) {
            guard let frontend = try await xenstore(backendPath, { try await store.read(backendPath + "/frontend") })
            else {
                throw .badKey(path: backendPath, underlying: BlkifKeyError.missing(key: "frontend"))
            }
            var service = VbdService(
                device: device, backendPath: backendPath, frontendPath: frontend, store: store, grants: grants,
                events: events, options: options, logger: logger)
            do throws(BlockBackError) {
                try await service.run()
            } catch {
                // It carries the device's identity once the frontend's domain is known.
                logger = service.logger
                throw error
            }
        } catch {
            logger.debug("vbd stopped", metadata: ["error": "\(error)"])
            throw error
        }
    }

    /// `/local/domain/N` for a path below it (a frontend's domain directory), else nil.
    static func domainDirectory(of path: String) -> String? {
        let parts = path.split(separator: "/")
        guard parts.count > 3, parts[0] == "local", parts[1] == "domain", UInt16(parts[2]) != nil else { return nil }
        return "/local/domain/\(parts[2])"
    }

}

/// Runs `body`, wrapping a failure other than a `BlockBackError` as a xenstore failure at `path`.
func xenstore<T>(_ path: String, _ body: () async throws -> T) async throws(BlockBackError) -> T {
    do { return try await body() } catch let error as BlockBackError { throw error } catch {
        throw .xenstore(path: path, underlying: error)
    }
}

/// A one-shot flag, set when a queue finds its ring broken, with the first reason given; the queue also
/// writes the backend Closing, which wakes the xenstore wait that checks the flag.
final class RingBreakSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    private let firstReason = Mutex<String?>(nil)
    var fired: Bool { flag.load(ordering: .acquiring) }
    /// The first reason given, once fired.
    var reason: String? { firstReason.withLock { $0 } }

    /// Records `reason` if it is the first; true for the first call.
    func fire(_ reason: String) -> Bool {
        let first = firstReason.withLock { current -> Bool in
            defer { current = current ?? reason }
            return current == nil
        }
        flag.store(true, ordering: .releasing)
        return first
    }
}
