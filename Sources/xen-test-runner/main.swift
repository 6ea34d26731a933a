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
await ConsoleChecks.run(report)

exit(report.finish())
