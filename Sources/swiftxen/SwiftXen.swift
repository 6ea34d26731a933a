import ArgumentParser

/// `swiftxen`: the command-line face of SwiftXen. Each component adds its subcommand group.
@main
struct SwiftXen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftxen",
        abstract: "The Xen device stack in Swift: xenstore, grants, block, network, console, NBD, userdata, vchan.",
        subcommands: [
            StoreCommand.self, BlockCommand.self, NetCommand.self, ConsoleCommand.self, NBDCommandGroup.self,
            UserdataCommand.self, VchanCommand.self, DemoCommand.self,
        ]
    )
}
