public import XenCore
public import Xenbus

/// The toolstack's part of attaching a disk: the frontend and backend xenstore directories of one vbd,
/// written in one transaction with the owners and permissions Xen's toolstack gives them (the frontend
/// directory owned by the guest, readable by the backend domain; the backend directory owned by the backend
/// domain, readable by the guest).
///
/// OCaml: `Blkback.create` / `Blkback.destroy`
public struct VirtualBlockDeviceNodes: Sendable, Equatable {
    /// The domain running the backend.
    public var backendDomain: DomainID
    /// The guest running the frontend.
    public var frontendDomain: DomainID
    /// The vbd's xenstore id (e.g. 51712 for xvda).
    public var deviceID: UInt32
    /// Whether the guest may write.
    public var writable: Bool
    /// The backend directory's device class: `vbd`, or another name where the dom0 kernel's xen-blkback
    /// (which serves every `backend/vbd` directory of its domain) must leave the device to us.
    public var backendClass: String

    /// A vbd description.
    public init(
        backendDomain: DomainID, frontendDomain: DomainID, deviceID: UInt32, writable: Bool = true,
        backendClass: String = "vbd"
    ) {
        self.backendDomain = backendDomain
        self.frontendDomain = frontendDomain
        self.deviceID = deviceID
        self.writable = writable
        self.backendClass = backendClass
    }

    /// `/local/domain/<guest>/device/vbd/<id>`.
    public var frontendPath: String { "/local/domain/\(frontendDomain)/device/vbd/\(deviceID)" }
    /// `/local/domain/<backend>/backend/<backendClass>/<guest>/<id>`.
    public var backendPath: String {
        "/local/domain/\(backendDomain)/backend/\(backendClass)/\(frontendDomain)/\(deviceID)"
    }

    /// Creates both directories, sets their permissions, then writes their keys (state Initialising), which
    /// inherit the directory's permissions as xenstored gives new nodes.
    ///
    /// OCaml: `Blkback.create`
    public func create(in store: any XenbusStore) async throws {
        let front = frontendPath
        let back = backendPath
        try await store.createDevicePair(frontend: front, owner: frontendDomain, backend: back, owner: backendDomain)
        try await store.write([
            (front + "/backend", back),
            (front + "/backend-id", String(backendDomain.rawValue)),
            (front + "/virtual-device", String(deviceID)),
            (front + "/device-type", "disk"),
            (front + "/state", XenbusState.initialising.xenstoreValue),
            (back + "/frontend", front),
            (back + "/frontend-id", String(frontendDomain.rawValue)),
            (back + "/online", "1"),
            (back + "/removable", "0"),
            (back + "/mode", writable ? "w" : "r"),
            (back + "/state", XenbusState.initialising.xenstoreValue),
        ])
    }

    /// Removes both directories.
    ///
    /// OCaml: `Blkback.destroy`
    public func destroy(in store: any XenbusStore) async throws {
        try await store.remove(frontendPath)
        try await store.remove(backendPath)
    }

    /// Detaches the vbd from a running guest as libxl does: `online = 0` and backend `state = Closing`, so
    /// that the backend closes and the guest's frontend lets go of the disk; once the backend is `Closed`
    /// (or gone) both directories are removed. The caller bounds the wait (a hung guest never closes).
    ///
    /// OCaml: none (libxl `libxl_device_disk_remove`: `libxl__initiate_device_generic_remove`)
    public func detach(in store: any XenbusStore) async throws {
        let back = backendPath
        try await store.write([(back + "/online", "0"), (back + "/state", XenbusState.closing.xenstoreValue)])
        _ = try await store.waitForState(of: back, orGone: true) { $0 == .closed }
        try await destroy(in: store)
    }

    /// Whether the device is still there to serve: the toolstack keeps it online (`online` is `1`) and the
    /// guest's device directory exists. False once the toolstack detached it or the domain went away.
    ///
    /// OCaml: none (Linux `xenbus_dev_is_online`)
    public func isOnline(in store: any XenbusStore) async throws -> Bool {
        guard try await store.read(backendPath + "/online") == "1" else { return false }
        return try await store.read(frontendPath + "/backend") != nil
    }
}
