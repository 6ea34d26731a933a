// What a xenstore client's user needs beside the client itself, re-exported as NIOPosix re-exports NIOCore:
// `DomainID` and `PageBuffer` (XenCore); the wire protocol's types come with XenStoreClient.swift's
// re-export of XenStoreProtocol.
@_exported public import XenCore
