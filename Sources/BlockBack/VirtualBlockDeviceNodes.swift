public import BlkifProtocol
public import XenCore

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

    /// A vbd description.
    public init(backendDomain: DomainID, frontendDomain: DomainID, deviceID: UInt32, writable: Bool = true) {
        self.backendDomain = backendDomain
        self.frontendDomain = frontendDomain
        self.deviceID = deviceID
        self.writable = writable
    }

    /// `/local/domain/<guest>/device/vbd/<id>`.
    public var frontendPath: String { "/local/domain/\(frontendDomain)/device/vbd/\(deviceID)" }
    /// `/local/domain/<backend>/backend/vbd/<guest>/<id>`.
    public var backendPath: String { "/local/domain/\(backendDomain)/backend/vbd/\(frontendDomain)/\(deviceID)" }

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
}
