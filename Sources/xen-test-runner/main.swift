// xen-test-runner: the checks the real-Xen tier runs inside dom0 (see scripts/xen/ and README).
// One console line per check ("PASS name" / "FAIL name: why"), then "N passed, N failed".
// Exit status 0 when every check passed.
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

let variant = getenv("XT_XENSTORED").map { String(cString: $0) } ?? "unknown"
let report = Report(prefix: "[\(variant)] ")
report.startWatchdog()

HypervisorChecks.run(report)
LibXenstoreChecks.run(report)
GrantEventChecks.run(report)
UserdataChecks.run(report)
await GrantTableChecks.run(report)
await XenStoreClientChecks.run(report)
await ConversationReplay.run(report, daemon: variant)
await BlockBackChecks.run(report)
await BlockFrontChecks.run(report)
// ConsoleChecks (ConsoleFrontend over gntalloc + ConsoleBack over gntdev in dom0) is not run yet: on real
// Xen 4.17 the handshake completes but no byte moves (the backend's mapping and an independent probe mapping
// of ring-ref do not see the frontend's index updates). Open defect, see README "Real Xen tier"; enable it
// here once fixed: await ConsoleChecks.run(report)

exit(report.finish())
