public import NetifProtocol
public import XenCore
public import Xenbus

/// The toolstack's part of attaching a network interface: the frontend and backend xenstore directories of
/// one vif, with the owners and permissions libxl gives them (the frontend directory owned by the guest and
/// readable by the backend domain; the backend directory owned by the backend domain and readable by the
/// guest), and the keys both Linux drivers and ours read.
///
/// OCaml: none (mirage-net-xen leaves this to the toolstack; libxl's `libxl__device_nic_add`)
public struct VirtualInterfaceNodes: Sendable, Equatable {
    /// The domain running the backend.
    public var backendDomain: DomainID
    /// The guest running the frontend.
    public var frontendDomain: DomainID
    /// The vif handle (`vifN.<handle>` in Linux).
    public var handle: UInt32
    /// The guest's MAC address.
    public var mac: MACAddress
    /// The MTU written for the frontend (nil: none written, 1500 assumed).
    public var mtu: Int?
    /// The hotplug script the backend is told to run (Linux xen-netback refuses a vif without `script`).
    public var script: String
    /// The bridge the hotplug script would add the host side to (written when set, as libxl does).
    public var bridge: String?
    /// The frontend directory's device class (`vif`; another keeps a kernel xen-netfront of the guest away).
    public var deviceClass: String
    /// The backend directory's class (`vif`; another keeps a kernel xen-netback of the backend domain away).
    public var backendClass: String

    /// A vif description.
    public init(
        backendDomain: DomainID, frontendDomain: DomainID, handle: UInt32, mac: MACAddress, mtu: Int? = nil,
        script: String = "vif-bridge", bridge: String? = nil, deviceClass: String = "vif", backendClass: String = "vif"
    ) {
        self.backendDomain = backendDomain
        self.frontendDomain = frontendDomain
        self.handle = handle
        self.mac = mac
        self.mtu = mtu
        self.script = script
        self.bridge = bridge
        self.deviceClass = deviceClass
        self.backendClass = backendClass
    }

    /// `/local/domain/<guest>/device/vif/<handle>`.
    public var frontendPath: String { "/local/domain/\(frontendDomain)/device/\(deviceClass)/\(handle)" }
    /// `/local/domain/<backend>/backend/vif/<guest>/<handle>`.
    public var backendPath: String {
        "/local/domain/\(backendDomain)/backend/\(backendClass)/\(frontendDomain)/\(handle)"
    }

    /// Creates both directories, sets their permissions, then writes their keys (state Initialising, online),
    /// which inherit the directory's permissions as xenstored gives new nodes.
    ///
    /// OCaml: none (libxl `libxl__device_nic_add`, `libxl__device_generic_add`)
    public func create(in store: any XenbusStore) async throws {
        let front = frontendPath
        let back = backendPath
        try await store.createDevicePair(frontend: front, owner: frontendDomain, backend: back, owner: backendDomain)
        var pairs: [(path: String, value: String)] = [
            (front + "/backend", back),
            (front + "/backend-id", String(backendDomain.rawValue)),
            (front + "/" + NetifDeviceKeys.handle, String(handle)),
            (front + "/" + NetifDeviceKeys.mac, mac.description),
            (front + "/state", XenbusState.initialising.xenstoreValue),
            (back + "/frontend", front),
            (back + "/frontend-id", String(frontendDomain.rawValue)),
            (back + "/" + NetifDeviceKeys.handle, String(handle)),
            (back + "/" + NetifDeviceKeys.mac, mac.description),
            (back + "/" + NetifDeviceKeys.online, "1"),
            (back + "/" + NetifDeviceKeys.script, script),
            (back + "/type", "vif"),
            (back + "/state", XenbusState.initialising.xenstoreValue),
        ]
        if let mtu {
            pairs.append((front + "/" + NetifDeviceKeys.mtu, String(mtu)))
            pairs.append((back + "/" + NetifDeviceKeys.mtu, String(mtu)))
        }
        if let bridge { pairs.append((back + "/bridge", bridge)) }
        try await store.write(pairs)
    }

    /// Tells the backend the device is going away (`online` = 0): it stops serving once the frontend closes.
    ///
    /// OCaml: none (libxl `libxl__device_destroy` → `online=0`, `state=5`)
    public func unplug(in store: any XenbusStore) async throws {
        try await store.write(backendPath + "/" + NetifDeviceKeys.online, "0")
    }

    /// Removes both directories.
    ///
    /// OCaml: none (libxl removes them after the backend reaches Closed)
    public func destroy(in store: any XenbusStore) async throws {
        try await store.remove(frontendPath)
        try await store.remove(backendPath)
    }
}
