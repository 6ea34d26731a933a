import Foundation
import Testing
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#endif

/// `openDefaultTransport` when neither the daemon socket nor the xenbus device opens: the error names the
/// path that failed together with that path's own errno. (On a Xen host the device opens: nothing to test.)
@Suite(.enabled(if: noXenbusDevice, "a host without /dev/xen/xenbus and /proc/xen/xenbus"))
final class DefaultTransportTests {
    /// `XENSTORED_RUNDIR` of each test: empty, or holding the socket the test makes.
    let directory = NSTemporaryDirectory() + "swiftxen-default-\(UUID().uuidString.prefix(8))"

    init() throws { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    @Test func noSocketNamesTheDeviceWithItsErrno() {
        let device = XenbusDeviceTransport.defaultPath(environment: [:])
        #expect(throws: XenStoreError.connectionFailed(path: device, errno: ENOENT)) {
            _ = try XenStoreClient.openDefaultTransport(environment: ["XENSTORED_RUNDIR": directory])
        }
    }

    @Test func aSocketNobodyListensOnIsNamedWithItsErrno() throws {
        // A socket file that was bound and closed: connecting to it is refused.
        let path = directory + "/socket"
        let address = try UnixSocketAddress(path: path)
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let bound = address.bind(descriptor)
        close(descriptor)
        try #require(bound == 0)
        #expect(throws: XenStoreError.connectionFailed(path: path, errno: ECONNREFUSED)) {
            _ = try XenStoreClient.openDefaultTransport(environment: ["XENSTORED_RUNDIR": directory])
        }
    }
}

let noXenbusDevice = access("/dev/xen/xenbus", F_OK) != 0 && access("/proc/xen/xenbus", F_OK) != 0
