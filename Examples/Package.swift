// swift-tools-version:6.1
// SwiftXen's examples: a package of its own that depends on SwiftXen by path and uses only its public
// products, as yours will. `make examples` (part of `make test`) builds it with warnings as errors and runs
// its tests, so the code the documentation shows keeps compiling and passing.
import PackageDescription

let package = Package(
    name: "SwiftXenExamples",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "SwiftXen", path: "..")],
    targets: [
        // A toolstack function, tested against the in-memory xenstored.
        .target(
            name: "ToolstackExample",
            dependencies: [
                .product(name: "XenCore", package: "SwiftXen"),
                .product(name: "XenStoreClient", package: "SwiftXen"),
            ]
        ),
        .testTarget(
            name: "ToolstackExampleTests",
            dependencies: [
                "ToolstackExample",
                .product(name: "XenStoreClient", package: "SwiftXen"),
                .product(name: "XenStoreServer", package: "SwiftXen"),
            ]
        ),
        // A guest's BlockFront on dom0's BlockBack, on the simulated hypervisor.
        .target(
            name: "BlockPairExample",
            dependencies: [
                .product(name: "XenCore", package: "SwiftXen"),
                .product(name: "BlockDevice", package: "SwiftXen"),
                .product(name: "BlockFront", package: "SwiftXen"),
                .product(name: "BlockBack", package: "SwiftXen"),
                .product(name: "SimulatedHypervisor", package: "SwiftXen"),
                .product(name: "XenStoreClient", package: "SwiftXen"),
                .product(name: "XenStoreServer", package: "SwiftXen"),
            ]
        ),
        .testTarget(
            name: "BlockPairExampleTests",
            dependencies: [
                "BlockPairExample",
                .product(name: "XenCore", package: "SwiftXen"),
                .product(name: "BlockDevice", package: "SwiftXen"),
                .product(name: "SimulatedHypervisor", package: "SwiftXen"),
                .product(name: "XenStoreServer", package: "SwiftXen"),
            ]
        ),
        // A disk copied from one NBD export to another.
        .target(
            name: "NBDCopyExample",
            dependencies: [
                .product(name: "XenCore", package: "SwiftXen"),
                .product(name: "NBDClient", package: "SwiftXen"),
            ]
        ),
        .testTarget(
            name: "NBDCopyExampleTests",
            dependencies: [
                "NBDCopyExample",
                .product(name: "XenCore", package: "SwiftXen"),
                .product(name: "BlockDevice", package: "SwiftXen"),
                .product(name: "NBDServer", package: "SwiftXen"),
            ]
        ),
    ]
)
