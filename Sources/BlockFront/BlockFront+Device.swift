import EventChannel
import GrantTable
import Synchronization
import XenStoreClient
import Xenbus

extension BlockFront {
    /// Connects to the vbd `device` — "51712", "xvda" or "/dev/xvda" — of the domain this process runs in,
    /// finding everything else as OCaml's `Blkfront.connect "51712"` does: the backend from the frontend
    /// directory's `backend` and `backend-id` keys, this domain's id from xenstore's `domid` (unless
    /// `options.domain` is set), and the interfaces from the environment, through the package's defaults —
    /// xenstore as libxenstore's `xs_open` finds it (`XenStoreClient.make()`: `XENSTORED_PATH`, the
    /// xenstored socket, then the xenbus device), grants and event channels through Xen's devices
    /// (`XenGrantTable`, `XenEventChannel`; pages are shared through `/dev/xen/gntalloc`). The connection owns
    /// its xenstore client and closes it on ``disconnect()``. A second connect to the device while this one
    /// is connected fails with ``BlockFrontError/alreadyConnected(path:)``.
    ///
    /// On the simulator, or with your own xenstore connection, use
    /// ``connect(_:store:grants:events:options:)-(String,_,_,_,_)``.
    ///
    /// OCaml: `Blkfront.connect`
    public static func connect(
        device: String, options: BlockFrontOptions = BlockFrontOptions()
    ) async throws(BlockFrontError) -> BlockFront {
        let client: XenStoreClient
        do throws(XenStoreError) { client = try await XenStoreClient.make() } catch {
            throw .xenstore(path: "", underlying: error)
        }
        do throws(BlockFrontError) {
            let grants: XenGrantTable
            do throws(GrantTableError) { grants = try XenGrantTable() } catch {
                throw .resources("opening \(XenGrantTable.device)", underlying: error)
            }
            let events: XenEventChannel
            do throws(EventChannelError) { events = try XenEventChannel() } catch {
                throw .resources("opening \(XenEventChannel.device)", underlying: error)
            }
            let front = try await connect(
                device, store: XenStoreBus(client: client), grants: grants, events: events, options: options)
            front.ownedClient.withLock { $0 = client }
            return front
        } catch {
            await client.close()
            throw error
        }
    }
}

/// One connection's hold on a device (its frontend directory in one xenstore): while it lives, connecting
/// the device again in this process fails. Released by `release()` or when the connection goes.
final class DeviceClaim: Sendable {
    struct Key: Hashable {
        let connection: ObjectIdentifier?
        let path: String
    }

    private static let held = Mutex<Set<Key>>([])
    private let key: Key
    private let released = Atomic<Bool>(false)

    private init(_ key: Key) { self.key = key }

    /// The claim on `path` through `connection`, or nil when the device is claimed already.
    static func take(store connection: ObjectIdentifier?, path: String) -> DeviceClaim? {
        let key = Key(connection: connection, path: path)
        guard held.withLock({ $0.insert(key).inserted }) else { return nil }
        return DeviceClaim(key)
    }

    /// Lets the device be connected again (once; later calls do nothing).
    func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = Self.held.withLock { $0.remove(key) }
    }

    deinit { release() }
}
