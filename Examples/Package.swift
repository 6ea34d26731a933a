// swift-tools-version:6.1
// SwiftXen's examples: a package of its own that depends on SwiftXen by path and uses only its public
// products, as yours will. `make examples` (part of `make test`) builds it with warnings as errors and runs
// its tests, so the code the documentation shows keeps compiling and passing.
import PackageDescription

/// SwiftXen's products `names`, as target dependencies.
func swiftXen(_ names: String...) -> [Target.Dependency] {
    names.map { .product(name: $0, package: "SwiftXen") }
}

let package = Package(
    name: "SwiftXenExamples",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "SwiftXen", path: ".."),
        // The metrics backend a driver domain bootstraps (DriverDomainMetricsExample).
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        // README.md's quickstarts, one function per component, run end to end on the simulator.
        .target(
            name: "Quickstarts",
            dependencies: swiftXen(
                "XenCore", "XenStoreClient", "XenStoreServer", "SimulatedHypervisor", "GrantTable", "EventChannel",
                "BlockDevice", "BlockFront", "BlockBack", "NetifProtocol", "NetworkDevice", "NetFront", "NetBack",
                "ConsoleBackend", "NBDClient", "NBDServer", "DomainUserdata", "Vchan")
        ),
        .testTarget(
            name: "QuickstartsTests",
            dependencies: ["Quickstarts"]
                + swiftXen(
                    "XenCore", "XenStoreClient", "XenStoreServer", "SimulatedHypervisor", "BlockFront",
                    "ConsoleBackend", "NetworkDevice")
        ),
        // A toolstack function, tested against the in-memory xenstored.
        .target(name: "ToolstackExample", dependencies: swiftXen("XenStoreClient")),
        .testTarget(
            name: "ToolstackExampleTests",
            dependencies: ["ToolstackExample"] + swiftXen("XenStoreClient", "XenStoreServer")
        ),
        // A guest's BlockFront on dom0's BlockBack, on the simulated hypervisor.
        .target(
            name: "BlockPairExample",
            dependencies: swiftXen("BlockFront", "BlockBack", "SimulatedHypervisor", "XenStoreServer")
        ),
        .testTarget(
            name: "BlockPairExampleTests",
            dependencies: ["BlockPairExample"]
                + swiftXen("XenCore", "BlockDevice", "SimulatedHypervisor", "XenStoreServer")
        ),
        // A disk copied from one NBD export to another.
        .target(name: "NBDCopyExample", dependencies: swiftXen("XenCore", "NBDClient")),
        .testTarget(
            name: "NBDCopyExampleTests",
            dependencies: ["NBDCopyExample"] + swiftXen("XenCore", "BlockDevice", "NBDServer")
        ),
        // A driver domain exporting its block backend's metrics in Prometheus' text format.
        .target(
            name: "DriverDomainMetricsExample",
            dependencies: swiftXen(
                "XenCore", "BlockDevice", "BlockBack", "BlockFront", "SimulatedHypervisor", "XenStoreClient",
                "XenStoreServer"
            )
                + [
                    .product(name: "Prometheus", package: "swift-prometheus"),
                    .product(name: "CoreMetrics", package: "swift-metrics"),
                ]
        ),
        .testTarget(
            name: "DriverDomainMetricsExampleTests",
            dependencies: ["DriverDomainMetricsExample"]
                + swiftXen(
                    "XenCore", "BlockDevice", "BlockFront", "SimulatedHypervisor", "XenStoreClient", "XenStoreServer")
        ),
    ]
)
