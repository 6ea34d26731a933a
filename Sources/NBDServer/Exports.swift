// What a server's user needs beside NBDServer itself, re-exported as NIOPosix re-exports NIOCore: the pure
// server core that lives in NBDProtocol (`NBDServerHandshake`, `NBDServerSession`, `NBDServerTLSMode`,
// `NBDExportDescription`, `NBDServerOperation`, `NBDServerRefusal`) and the codec types in NBDServer's API
// (`NBDEndpoint`, `NBDErrno`, ...), so `import NBDServer` alone still names them.
@_exported public import NBDProtocol
