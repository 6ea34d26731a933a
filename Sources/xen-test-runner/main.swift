// xen-test-runner: the checks the real-Xen tier runs inside dom0 (see scripts/xen/ and Documentation/RealXen.md).
// One console line per check ("PASS name" / "FAIL name: why"), then "N passed, N failed".
// Exit status 0 when every check passed. XT_ONLY=group,group (from `make xen-test XT_ONLY=...` via the
// kernel command line) runs only those groups: hypervisor, libxenstore, grantevent, userdata, grants,
// client, conversation, blockback, blockfront, console, net, vchan, domu (it unloads the kernel's
// xen-blkback), domunet (a guest on our NetBack and the kernel's xen-netback), hostile (a guest running this
// runner as a frontend gone bad against our BlockBack); `main` = all but the three guests. `bench` (make
// xen-bench: our backends beside xen-blkback and QEMU's qdisk, one table) runs only when named: not in `all`.
// scripts/xen/xen-test.sh boots dom0 once per xenstored with every group. `xen-test-runner hostile-guest` is
// the hostile guest's side.
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// A child of the vchan checks: one vchan endpoint in a process of its own (see VchanPeer).
if CommandLine.arguments.count > 1, CommandLine.arguments[1] == "vchan-peer" {
    exit(await VchanPeer.main(Array(CommandLine.arguments.dropFirst(2))))
}
// Inside the hostile domU (scripts/xen/hostile-init.sh): the guest's side, nothing of dom0's.
if CommandLine.arguments.dropFirst().first == "hostile-guest" { exit(await HostileGuest.main()) }

let variant = getenv("XT_XENSTORED").map { String(cString: $0) } ?? "unknown"
let only = getenv("XT_ONLY").map { String(cString: $0).split { $0 == "," || $0 == "+" }.map(String.init) } ?? []
/// Every group by default; `main` is every group but the guests' (a boot without a guest). The benchmark
/// (`bench`) only when named.
func wanted(_ group: String) -> Bool {
    if group == "bench" { return only.contains(group) }
    return only.isEmpty || only.contains(group) || only.contains("all")
        || (only.contains("main") && !["domu", "domunet", "hostile"].contains(group))
}
// Under AddressSanitizer (XT_ASAN=1) its own handlers report faults, with the shadow memory's verdict.
if getenv("XT_ASAN") == nil { CrashReport.install() }
let report = Report(prefix: "[\(variant)] ")
// Watch fresh memory for changes made from outside our code, for the whole run (HeapCanary.swift);
// XT_CANARY=heavy watches 32 MiB instead of 4 (a debugging setting: it slows the run).
if getenv("XT_CANARY").map({ String(cString: $0) }) == "heavy" {
    HeapCanary.start(regionBytes: 1 << 20, kept: 32, interval: 20_000)
} else {
    HeapCanary.start()
}
report.startWatchdog()

if wanted("hypervisor") { HypervisorChecks.run(report) }
if wanted("libxenstore") { LibXenstoreChecks.run(report) }
if wanted("grantevent") { GrantEventChecks.run(report) }
if wanted("userdata") { UserdataChecks.run(report) }
if wanted("grants") { await GrantTableChecks.run(report) }
if wanted("client") { await XenStoreClientChecks.run(report) }
if wanted("conversation") { await ConversationReplay.run(report, daemon: variant) }
if wanted("blockback") { await BlockBackChecks.run(report) }
if wanted("blockfront") { await BlockFrontChecks.run(report) }
if wanted("console") { await ConsoleChecks.run(report) }
if wanted("net") { await NetChecks.run(report) }
if wanted("vchan") { await VchanChecks.run(report) }
if wanted("domu") { await DomUChecks.run(report) }
if wanted("domunet") { await DomUNetChecks.run(report) }
if wanted("hostile") { await HostileChecks.run(report) }
if wanted("bench") { await BenchChecks.run(report) }

report.check("dom0 memory integrity: no page of the runner changed underneath it (canary)") {
    let (changed, rounds) = HeapCanary.findings
    try require(rounds > 0, "the canary thread never ran")
    try require(changed == 0, "\(changed) words of the canary's private memory changed (XT-CANARY lines above)")
    report.detail("\(rounds) rounds")
}

exit(report.finish())
