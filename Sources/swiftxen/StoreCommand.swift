import ArgumentParser
import Dispatch
import Foundation
import XenCore
import XenStoreServer

/// `swiftxen store ...`: xenstore commands. Each subcommand lives in its own type; add new ones to
/// `StoreCommand.subcommands` (one line each).
struct StoreCommand: AsyncParsableCommand {
    /// The `store` subcommands. Extend this list to add `read`, `write`, `ls`, ...
    static let subcommands: [any ParsableCommand.Type] = [StoreServe.self] + storeClientSubcommands

    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "XenStore: run the in-memory xenstored, talk to a xenstore.",
        subcommands: subcommands
    )
}

/// `swiftxen store serve --socket PATH`: the in-memory xenstored in the foreground until SIGINT/SIGTERM.
struct StoreServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the in-memory xenstored on a unix socket until interrupted.",
        discussion: "Point libxenstore and the stock tools at it with XENSTORED_PATH=PATH."
    )

    @Option(help: "The unix socket to listen on.")
    var socket: String

    @Option(help: "The domain id socket clients act as (0, privileged, like C xenstored).")
    var domain: UInt16 = 0

    func run() async throws {
        let server = XenStoreServer()
        let listener = try await server.listen(unixSocketPath: socket, domain: DomainID(domain))
        print("swiftxen xenstored: listening on \(socket) as domain \(domain); XENSTORED_PATH=\(socket)")
        let signal = await TerminationSignal.wait()
        await listener.close()
        try? FileManager.default.removeItem(atPath: socket)
        print("swiftxen xenstored: stopped (\(signal))")
    }
}

/// Waits for SIGINT or SIGTERM without blocking a thread.
enum TerminationSignal {
    private final class Sources: @unchecked Sendable {
        // Touched only on the signal queue.
        var sources: [any DispatchSourceSignal] = []
        var continuation: CheckedContinuation<String, Never>?
    }

    static func wait() async -> String {
        let queue = DispatchQueue(label: "swiftxen.signals")
        let holder = Sources()
        return await withCheckedContinuation { continuation in
            queue.sync {
                holder.continuation = continuation
                for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
                    Foundation.signal(number, SIG_IGN)
                    let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                    source.setEventHandler {
                        holder.continuation?.resume(returning: name)
                        holder.continuation = nil
                        holder.sources.forEach { $0.cancel() }
                    }
                    source.resume()
                    holder.sources.append(source)
                }
            }
        }
    }
}
