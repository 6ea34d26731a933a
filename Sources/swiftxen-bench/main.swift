// swiftxen-bench: `make bench`. Each component contributes one benchmark group (Bench+<Component>.swift);
// all groups run in one process, side by side with the peer named in their issue, and print ratios.
let groups: [(name: String, run: () async throws -> Void)] = [
    ("xenstore", XenStoreBench.run),
    ("grants", benchGrants),
    ("block", BlockBench.run),
    ("net", NetBench.run),
    ("console", benchConsole),
    ("nbd", NBDBench.run),
    ("nbd-server", NBDServerBench.run),
    ("vchan", VchanBench.run),
]

let only = CommandLine.arguments.dropFirst().first
for group in groups where only == nil || only == group.name {
    print("== \(group.name)")
    do { try await group.run() } catch { print("   \(group.name) failed: \(error)") }
}
