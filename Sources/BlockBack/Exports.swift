// What a block backend's user needs beside BlockBack itself, re-exported as NIOPosix re-exports NIOCore:
// `DomainID` and `PageBuffer` (XenCore), `BlockDevice`, `MemoryBlockDevice` and `FileBlockDevice`
// (BlockDevice), `XenbusStore` and `XenbusState` (BlkifProtocol).
@_exported public import BlkifProtocol
@_exported public import BlockDevice
@_exported public import XenCore
