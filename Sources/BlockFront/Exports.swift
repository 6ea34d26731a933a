// What a block frontend's user needs beside BlockFront itself, re-exported as NIOPosix re-exports NIOCore:
// `DomainID` and `PageBuffer` (XenCore), `BlockDevice`, `BlockError` and `BlockDeviceInfo` (BlockDevice),
// `XenbusStore` and `XenbusState` (BlkifProtocol), and `XenStoreClient` for `XenStoreBus(client:)`.
@_exported public import BlkifProtocol
@_exported public import BlockDevice
@_exported public import XenCore
@_exported public import XenStoreClient
