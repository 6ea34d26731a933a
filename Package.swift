// swift-tools-version:6.1
// SwiftXen: the MirageOS Xen device stack, rebuilt in Swift on async/await.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "SwiftXen",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "XenCore", targets: ["XenCore"]),
        .library(name: "XenStoreProtocol", targets: ["XenStoreProtocol"]),
        .library(name: "XenStoreServer", targets: ["XenStoreServer"]),
        .library(name: "XenStoreClient", targets: ["XenStoreClient"]),
        .library(name: "Xenbus", targets: ["Xenbus"]),
        .library(name: "GrantTable", targets: ["GrantTable"]),
        .library(name: "EventChannel", targets: ["EventChannel"]),
        .library(name: "SimulatedHypervisor", targets: ["SimulatedHypervisor"]),
        .library(name: "SharedRing", targets: ["SharedRing"]),
        .library(name: "BlockDevice", targets: ["BlockDevice"]),
        .library(name: "BlkifProtocol", targets: ["BlkifProtocol"]),
        .library(name: "BlockFront", targets: ["BlockFront"]),
        .library(name: "BlockBack", targets: ["BlockBack"]),
        .library(name: "NetifProtocol", targets: ["NetifProtocol"]),
        .library(name: "NetworkDevice", targets: ["NetworkDevice"]),
        .library(name: "NetFront", targets: ["NetFront"]),
        .library(name: "NetBack", targets: ["NetBack"]),
        .library(name: "ConsoleBackend", targets: ["ConsoleBackend"]),
        .library(name: "NBDProtocol", targets: ["NBDProtocol"]),
        .library(name: "NBDClient", targets: ["NBDClient"]),
        .library(name: "NBDServer", targets: ["NBDServer"]),
        .library(name: "DomainUserdata", targets: ["DomainUserdata"]),
        .library(name: "Vchan", targets: ["Vchan"]),
        .library(name: "XenTestSupport", targets: ["XenTestSupport"]),
        .executable(name: "swiftxen", targets: ["swiftxen"]),
        .executable(name: "swiftxen-bench", targets: ["swiftxen-bench"]),
        .executable(name: "xen-test-runner", targets: ["xen-test-runner"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // `make docs` (DocC): build-time plugin only, nothing links it.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // MARK: - C shim over libxen-dev (Xen ABI headers and the C libraries)
        .systemLibrary(
            name: "CXen",
            pkgConfig: "xencontrol xenstore xengnttab xenevtchn xenvchan",
            providers: [.apt(["libxen-dev"])]
        ),

        // MARK: - Core value types and page buffers (no Xen dependency)
        .target(name: "XenCore", swiftSettings: strict),

        // MARK: - Backends' metrics and log metadata (internal: not a product)
        // One helper for BlockBack, NetBack and ConsoleBackend: swift-metrics objects per device, logger metadata.
        .target(
            name: "BackendTelemetry",
            dependencies: [
                "XenCore",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: - XenStore
        .target(name: "XenStoreProtocol", dependencies: ["XenCore"], swiftSettings: strict),
        .target(
            name: "XenStoreServer",
            dependencies: [
                "XenStoreProtocol", "XenCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The conversation table (what C xenstored answers, step by step): XenStoreServerTests plays it against
        // XenStoreServer, xen-test-runner replays it against the real daemons (internal: not a product).
        .target(
            name: "XenStoreConversations", dependencies: ["XenStoreProtocol", "XenStoreServer", "XenCore"],
            swiftSettings: strict
        ),
        .target(
            name: "XenStoreClient",
            dependencies: [
                "XenStoreProtocol", "XenCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Xenbus: the xenstore seam split device drivers take (XenbusStore) and its XenStoreClient adapter
        .target(
            name: "Xenbus", dependencies: ["XenCore", "XenStoreClient", "XenStoreProtocol"], swiftSettings: strict),

        // MARK: - Grants, event channels, the simulated hypervisor
        // One silent xentoollog logger for every libxen* handle (internal: not a product).
        .target(name: "XenToolLog", dependencies: ["CXen"], swiftSettings: strict),
        .target(name: "GrantTable", dependencies: ["XenCore", "CXen", "XenToolLog"], swiftSettings: strict),
        .target(name: "EventChannel", dependencies: ["XenCore", "CXen", "XenToolLog"], swiftSettings: strict),
        // It implements the seams (GrantTable's and EventChannel's backends, DomainUserdata's DomainDirectory):
        // the libraries behind those seams do not depend on it.
        .target(
            name: "SimulatedHypervisor",
            dependencies: ["XenCore", "GrantTable", "EventChannel", "DomainUserdata"],
            swiftSettings: strict
        ),

        // MARK: - Block devices
        .target(name: "SharedRing", dependencies: ["XenCore"], swiftSettings: strict),
        .target(name: "BlockDevice", dependencies: ["XenCore"], swiftSettings: strict),
        .target(name: "BlkifProtocol", dependencies: ["XenCore"], swiftSettings: strict),
        .target(
            name: "BlockFront",
            dependencies: [
                "XenCore", "BlockDevice", "BlkifProtocol", "SharedRing", "XenStoreClient", "Xenbus", "GrantTable",
                "EventChannel",
            ],
            swiftSettings: strict
        ),
        .target(
            name: "BlockBack",
            dependencies: [
                "XenCore", "BlockDevice", "BlkifProtocol", "SharedRing", "Xenbus", "GrantTable", "EventChannel",
                "BackendTelemetry",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Network devices
        .target(name: "NetifProtocol", dependencies: ["XenCore"], swiftSettings: strict),
        // The Mirage_net.S twin: the device protocol, frames, counters, the received-frame queue, bridging.
        .target(name: "NetworkDevice", dependencies: ["XenCore", "NetifProtocol"], swiftSettings: strict),
        .target(
            name: "NetFront",
            dependencies: [
                "XenCore", "NetifProtocol", "NetworkDevice", "SharedRing", "Xenbus", "GrantTable", "EventChannel",
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NetBack",
            dependencies: [
                "XenCore", "NetifProtocol", "NetworkDevice", "SharedRing", "Xenbus", "GrantTable", "EventChannel",
                "CXen", "BackendTelemetry",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Consoles
        .target(
            name: "ConsoleBackend",
            dependencies: [
                "XenCore", "XenStoreClient", "Xenbus", "GrantTable", "EventChannel", "CXen", "BackendTelemetry",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: - NBD (no Xen dependency)
        // The codec and the server's handshake/session core: pure, no NIO, so Fuzz/ links it without swift-nio-ssl.
        .target(name: "NBDProtocol", swiftSettings: strict),
        .target(
            name: "NBDClient",
            dependencies: [
                "NBDProtocol", "BlockDevice", "XenCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        .target(
            name: "NBDServer",
            dependencies: [
                "NBDProtocol", "BlockDevice", "XenCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),

        // MARK: - libxl per-domain userdata
        .target(
            name: "DomainUserdata",
            dependencies: ["XenCore", "XenStoreClient", "CXen", "XenToolLog"],
            swiftSettings: strict
        ),

        // MARK: - Vchan: libxenvchan-compatible byte streams between domains
        .target(
            name: "Vchan",
            dependencies: ["XenCore", "GrantTable", "EventChannel", "XenStoreClient"],
            swiftSettings: strict
        ),

        // MARK: - Test support: a simulated host and its devices, for the demo, benchmarks and tests
        .target(
            name: "XenTestSupport",
            dependencies: [
                "XenCore", "SimulatedHypervisor", "XenStoreServer", "XenStoreClient", "Xenbus", "BlockDevice",
                "BlockFront", "BlockBack", "ConsoleBackend", "NetifProtocol", "NetFront", "NetBack", "Vchan",
            ],
            swiftSettings: strict
        ),

        // MARK: - Command-line tool
        .executableTarget(
            name: "swiftxen",
            dependencies: [
                "XenCore", "XenStoreServer", "XenStoreClient", "GrantTable", "EventChannel", "SimulatedHypervisor",
                "BlockDevice", "BlockFront", "BlockBack", "ConsoleBackend", "NBDClient", "NBDServer", "NBDProtocol",
                "DomainUserdata", "BlkifProtocol", "NetFront", "NetBack", "NetifProtocol",
                "NetworkDevice", "Vchan", "Xenbus", "XenTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        .executableTarget(
            name: "swiftxen-bench",
            dependencies: [
                "XenCore", "XenStoreServer", "XenStoreClient", "GrantTable", "EventChannel", "SimulatedHypervisor",
                "BlockDevice", "BlockFront", "BlockBack", "ConsoleBackend", "NBDClient", "CXen", "NetFront", "NetBack",
                "NetifProtocol", "NetworkDevice", "Vchan", "XenTestSupport",
            ],
            swiftSettings: strict
        ),

        // MARK: - Real-Xen tier: runs inside dom0 under QEMU (scripts/xen/, `make xen-test`)
        .executableTarget(
            name: "xen-test-runner",
            dependencies: [
                "XenCore", "CXen", "GrantTable", "EventChannel", "BlockDevice", "BlkifProtocol", "BlockBack",
                "BlockFront", "XenStoreClient", "XenStoreProtocol", "XenStoreConversations", "DomainUserdata",
                "ConsoleBackend", "NetFront", "NetBack", "NetifProtocol", "NetworkDevice", "Vchan", "Xenbus",
                "XenTestSupport",
            ],
            swiftSettings: strict
        ),

        // MARK: - Tests
        .testTarget(name: "CXenTests", dependencies: ["CXen", "XenStoreProtocol"]),
        .testTarget(name: "XenCoreTests", dependencies: ["XenCore"]),
        .testTarget(name: "XenStoreProtocolTests", dependencies: ["XenStoreProtocol", "XenCore"]),
        .testTarget(
            name: "XenStoreServerTests",
            dependencies: ["XenStoreServer", "XenStoreProtocol", "XenCore", "XenStoreConversations"]),
        .testTarget(
            name: "XenStoreClientTests",
            dependencies: ["XenStoreClient", "XenStoreServer", "XenStoreProtocol", "XenCore"]
        ),
        .testTarget(name: "XenbusTests", dependencies: ["Xenbus", "XenStoreClient", "XenStoreServer", "XenCore"]),
        .testTarget(
            name: "GrantTableTests",
            dependencies: ["GrantTable", "EventChannel", "SimulatedHypervisor", "XenCore", "XenStoreClient"]
        ),
        .testTarget(name: "BlockDeviceTests", dependencies: ["BlockDevice", "XenCore"]),
        .testTarget(
            name: "BlockTests",
            dependencies: [
                "BlockFront", "BlockBack", "BlkifProtocol", "SharedRing", "SimulatedHypervisor", "XenStoreServer",
                "XenStoreClient", "Xenbus", "BlockDevice", "CXen", "XenCore", "GrantTable", "EventChannel",
                "XenTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "ConsoleTests",
            dependencies: [
                "ConsoleBackend", "SimulatedHypervisor", "XenStoreServer", "XenStoreClient", "XenCore", "CXen",
                "GrantTable", "XenTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "NetifTests", dependencies: ["NetifProtocol", "SharedRing", "CXen", "XenCore"]),
        .testTarget(
            name: "NetTests",
            dependencies: [
                "NetFront", "NetBack", "NetifProtocol", "NetworkDevice", "SharedRing", "SimulatedHypervisor",
                "XenStoreServer", "XenStoreClient", "BlockFront", "Xenbus", "XenCore", "GrantTable", "EventChannel",
                "CXen", "XenTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "NBDTests", dependencies: ["NBDClient", "NBDServer", "NBDProtocol", "BlockDevice", "XenCore"]),
        .testTarget(
            name: "XenTestSupportTests",
            dependencies: [
                "XenTestSupport", "BlockDevice", "ConsoleBackend", "XenCore", "XenStoreClient", "NetifProtocol",
                "NetworkDevice", "SimulatedHypervisor",
            ]),
        // The hostile guest's attacks (xen-test-runner hostile-guest) against BlockBack on the simulated hypervisor.
        .testTarget(
            name: "XenTestRunnerTests",
            dependencies: [
                "xen-test-runner", "SimulatedHypervisor", "XenStoreServer", "XenStoreClient", "BlockBack", "BlockFront",
                "BlockDevice", "XenCore", "ConsoleBackend", "XenTestSupport",
            ]
        ),
        .testTarget(
            name: "VchanTests",
            dependencies: [
                "Vchan", "CXen", "SimulatedHypervisor", "XenStoreServer", "XenStoreClient", "GrantTable",
                "EventChannel", "XenCore", "XenTestSupport",
            ]
        ),
        .testTarget(
            name: "DomainUserdataTests",
            dependencies: ["DomainUserdata", "XenStoreServer", "XenStoreClient", "SimulatedHypervisor", "XenCore"]
        ),
    ]
)
