public import GrantTable
public import XenCore

/// What a frontend asks for; each is capped by what the backend advertises.
///
/// OCaml: none (not in mirage-block-xen: its limits are constants: ring order ≤ 2, one indirect page)
public struct BlockFrontOptions: Sendable {
    /// This domain's id (the frontend directory is `/local/domain/<domain>/device/vbd/<id>`), or nil to read
    /// it from xenstore's `domid` node (relative to the connection's domain, as libxenvchan does).
    public var domain: DomainID?
    /// The largest ring order to use (pages per ring = 1 << order). Linux caps at 4.
    public var maxRingPageOrder: Int
    /// Queues to ask for (`multi-queue-num-queues`).
    public var queues: Int
    /// Most segments per indirect request (capped by the backend's `feature-max-indirect-segments` and 4096).
    public var maxIndirectSegments: Int
    /// Use persistent grants when the backend offers them.
    public var persistentGrants: Bool
    /// Share ring, indirect and data pages through this gntshr interface instead of `grantAccess`. When nil
    /// and the grant table cannot export (`XenGrantTable` in userspace: `.unsupported`), the
    /// frontend opens `XenGntshr` (`/dev/xen/gntalloc`) itself.
    public var gntshr: (any GntshrBackend)?
    /// Most data and indirect pages shared through gntshr at once (gntalloc's `limit` parameter caps every
    /// user of the device together, 1024 pages by default). Ignored on the `grantAccess` path.
    public var maxSharedPages: Int
    /// The device class of the frontend directory (`/local/domain/<domain>/device/<class>/<id>`). A backend
    /// finds its frontend through its `frontend` key, so another class keeps a kernel xen-blkfront of the
    /// same domain from claiming the device.
    public var deviceClass: String

    /// Defaults close to Linux xen-blkfront's; this domain's id read from xenstore unless given.
    ///
    /// OCaml: none (see the type)
    public init(
        domain: DomainID? = nil, maxRingPageOrder: Int = 4, queues: Int = 1, maxIndirectSegments: Int = 256,
        persistentGrants: Bool = true, gntshr: (any GntshrBackend)? = nil, maxSharedPages: Int = 512,
        deviceClass: String = "vbd"
    ) {
        self.gntshr = gntshr
        self.maxSharedPages = maxSharedPages
        self.deviceClass = deviceClass
        self.domain = domain
        self.maxRingPageOrder = maxRingPageOrder
        self.queues = queues
        self.maxIndirectSegments = maxIndirectSegments
        self.persistentGrants = persistentGrants
    }
}

/// What was negotiated with the backend: the features in use on this connection.
///
/// OCaml: none (not in mirage-block-xen: it keeps only `max_indirect_segments` and the disk info)
public struct BlockFrontNegotiated: Sendable, Equatable {
    /// Everything the backend advertised.
    public var backend: BlkifBackendSummary
    /// Pages per ring.
    public var ringPages: Int
    /// Queues in use.
    public var queues: Int
    /// Segments per request (11 without indirect descriptors).
    public var segmentsPerRequest: Int
    /// Whether persistent grants are in use.
    public var persistentGrants: Bool
}

/// The backend's advertised features, as the frontend read them.
public struct BlkifBackendSummary: Sendable, Equatable {
    /// `feature-flush-cache`.
    public var flush: Bool
    /// `feature-barrier`.
    public var barrier: Bool
    /// `feature-discard`.
    public var discard: Bool
    /// `feature-persistent`.
    public var persistent: Bool
    /// `feature-max-indirect-segments`.
    public var maxIndirectSegments: Int
    /// `max-ring-page-order`.
    public var maxRingPageOrder: Int
    /// `multi-queue-max-queues`.
    public var maxQueues: Int
}
