import CLibFuzzer

#if canImport(Glibc)
    import Glibc
#endif

// `swiftxen-fuzz TARGET [libFuzzer options] [corpus directories or inputs]`: runs libFuzzer on one target.
// `swiftxen-fuzz list` names the targets; `swiftxen-fuzz make-seeds DIR` writes the seed corpora.

/// Every fuzz target: one untrusted input each.
let targets: [(name: String, run: @Sendable ([UInt8]) -> Void)] = [
    ("xenstore-packet", XenStorePacketTarget.run),
    ("xenstore-server", XenStoreServerTarget.run),
    ("xenstore-ring", XenStoreRingTarget.run),
    ("nbd-reply", NBDReplyTarget.run),
    ("nbd-handshake", NBDHandshakeTarget.run),
    ("nbd-uri", NBDURITarget.run),
    ("blkif-back", BlkifBackTarget.run),
    ("blkif-front", BlkifFrontTarget.run),
    ("console-ring", ConsoleRingTarget.run),
    ("userdata", UserdataTarget.run),
    ("netif-back", NetifBackTarget.run),
    ("netif-front", NetifFrontTarget.run),
    ("vchan-ring", VchanRingTarget.run),
    ("nbd-server-request", NBDServerRequestTarget.run),
]

nonisolated(unsafe) var selected: @Sendable ([UInt8]) -> Void = { _ in }

@MainActor func usage() -> Never {
    print("usage: swiftxen-fuzz TARGET [libFuzzer options] [corpus...] | list | make-seeds DIR")
    print("targets: " + targets.map(\.name).joined(separator: " "))
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else { usage() }
switch arguments[1] {
case "list":
    for target in targets { print(target.name) }
    exit(0)
case "make-seeds":
    guard arguments.count == 3 else { usage() }
    Seeds.write(to: arguments[2])
    exit(0)
default:
    guard let target = targets.first(where: { $0.name == arguments[1] }) else { usage() }
    selected = target.run
}

// libFuzzer sees the program name and the options, not the target name.
var driverArguments: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + arguments.dropFirst(2)).map { strdup($0) }
driverArguments.append(nil)
var argc = Int32(driverArguments.count - 1)
let status = driverArguments.withUnsafeMutableBufferPointer { buffer in
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        selected(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }
}
exit(status)
