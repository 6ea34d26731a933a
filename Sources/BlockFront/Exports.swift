// What a block frontend's user needs beside BlockFront itself, re-exported as NIOPosix re-exports NIOCore:
// `DomainID`, `PageBuffer` and `XenbusState` (XenCore), `BlockDevice`, `BlockError` and `BlockDeviceInfo`
// (BlockDevice), the blkif codec (BlkifProtocol), `XenbusStore` and `XenStoreBus` (Xenbus), and
// `XenStoreClient` for `XenStoreBus(client:)`.
@_exported public import BlkifProtocol
@_exported public import BlockDevice
@_exported public import XenCore
@_exported public import XenStoreClient
@_exported public import Xenbus
