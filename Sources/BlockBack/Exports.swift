// What a block backend's user needs beside BlockBack itself, re-exported as NIOPosix re-exports NIOCore:
// `DomainID`, `PageBuffer` and `XenbusState` (XenCore), `BlockDevice`, `MemoryBlockDevice` and
// `FileBlockDevice` (BlockDevice), the blkif codec (BlkifProtocol), `XenbusStore` and `XenStoreBus` (Xenbus).
@_exported public import BlkifProtocol
@_exported public import BlockDevice
@_exported public import XenCore
@_exported public import Xenbus
