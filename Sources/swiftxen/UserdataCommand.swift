import ArgumentParser
import DomainUserdata
import Glibc
import XenCore
import XenStoreClient

/// `swiftxen userdata get|set|rm DOMID USERID`: libxl per-domain userdata from the shell, binary-safe
/// (values pass through stdin/stdout untouched). Shares /var/lib/xen with `xl`.
///
/// libxl: `libxl_userdata_retrieve` / `libxl_userdata_store` / `libxl_userdata_unlink`.
struct UserdataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "userdata",
        abstract: "Read, write or delete libxl per-domain userdata (files shared with xl).",
        subcommands: [Get.self, Set.self, Remove.self, Collect.self]
    )

    /// Arguments every userdata subcommand takes.
    struct Target: ParsableArguments {
        @Argument(help: "The domain id.")
        var domid: UInt16

        @Argument(help: "The userdata userid (e.g. xl, libxl-json, libvirt-xml).")
        var userid: String

        @Option(help: "The userdata directory.")
        var root: String = UserdataStore.defaultRoot

        @Option(
            help: ArgumentHelp(
                "Use this domain UUID instead of asking the hypervisor (hosts without Xen, tests).",
                valueName: "uuid"
            )
        )
        var uuid: String?

        /// Builds the store and validated id, printing a typed error and failing on bad input.
        func open() throws -> (UserdataStore, DomainID, UserdataID) {
            let domid = DomainID(domid)
            var parsedUUID: DomainUUID?
            if let uuid {
                guard let parsed = DomainUUID(uuid) else {
                    throw ValidationError("invalid UUID \(uuid.debugDescription)")
                }
                parsedUUID = parsed
            }
            do throws(UserdataError) {
                let userid = try UserdataID(validating: userid)
                let directory: any DomainDirectory
                if let parsedUUID {
                    directory = InMemoryDomainDirectory([domid: parsedUUID])
                } else {
                    directory = try XenControlDomainDirectory()
                }
                return (UserdataStore(root: root, domains: directory), domid, userid)
            } catch {
                throw UserdataCommand.fail(error)
            }
        }
    }

    static func fail(_ error: UserdataError) -> ExitCode {
        printError("swiftxen userdata: \(error)")
        return ExitCode.failure
    }

    static func printError(_ message: String) {
        let bytes = Array((message + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }

    // MARK: - get

    /// Writes the value to stdout; exit status 2 when there is none.
    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "get",
            abstract: "Write the value to stdout (exit status 2 when there is none)."
        )
        @OptionGroup var target: Target

        func run() throws {
            let (store, domid, userid) = try target.open()
            let value: [UInt8]?
            do throws(UserdataError) {
                value = try store.retrieve(domid: domid, userid: userid)
            } catch {
                throw UserdataCommand.fail(error)
            }
            guard let value else {
                UserdataCommand.printError("swiftxen userdata: no userdata \(userid) for domain \(domid)")
                throw ExitCode(2)
            }
            var offset = 0
            while offset < value.count {
                let written = value.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + offset, $0.count - offset) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw UserdataCommand.fail(.io(op: "write", path: "<stdout>", errno: errno))
                }
                offset += written
            }
        }
    }

    // MARK: - set

    /// Reads stdin to its end and stores it; empty stdin deletes, as libxl's `datalen == 0`.
    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Store stdin as the value (empty input deletes it, as libxl does)."
        )
        @OptionGroup var target: Target

        func run() throws {
            let (store, domid, userid) = try target.open()
            var data: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 256 * 1024)
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(0, $0.baseAddress!, $0.count) }
                if count < 0 {
                    if errno == EINTR { continue }
                    throw UserdataCommand.fail(.io(op: "read", path: "<stdin>", errno: errno))
                }
                if count == 0 { break }
                data.append(contentsOf: buffer[0..<count])
            }
            do throws(UserdataError) {
                try store.store(domid: domid, userid: userid, data: data)
            } catch {
                throw UserdataCommand.fail(error)
            }
        }
    }

    // MARK: - rm

    /// Deletes the value; fails when there is none, as libxl.
    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Delete the value (fails when there is none, as libxl does)."
        )
        @OptionGroup var target: Target

        func run() throws {
            let (store, domid, userid) = try target.open()
            do throws(UserdataError) {
                try store.unlink(domid: domid, userid: userid)
            } catch {
                throw UserdataCommand.fail(error)
            }
        }
    }

    // MARK: - collect

    /// Removes the userdata of domains that no longer exist, once or (with `--follow`) on every
    /// `@releaseDomain`. Needs the hypervisor (libxenctrl) and, with `--follow`, xenstored.
    struct Collect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "collect",
            abstract: "Remove the userdata of domains that no longer exist (with --follow: on every @releaseDomain)."
        )

        @Option(help: "The userdata directory.")
        var root: String = UserdataStore.defaultRoot

        @Flag(help: "Keep running, sweeping again whenever xenstore fires @releaseDomain.")
        var follow = false

        func run() async throws {
            let collector: UserdataCollector
            do throws(UserdataError) {
                collector = UserdataCollector(
                    store: UserdataStore(root: root, domains: try XenControlDomainDirectory()))
            } catch {
                throw UserdataCommand.fail(error)
            }
            let report: @Sendable ([UserdataCollector.Collected]) -> Void = { collected in
                for domain in collected {
                    print("domain \(domain.domid) (\(domain.uuid)): removed \(domain.removed.joined(separator: " "))")
                }
            }
            guard follow else {
                do throws(UserdataError) {
                    report(try await collector.sweepOffPool())
                } catch {
                    throw UserdataCommand.fail(error)
                }
                return
            }
            let client = try await XenStoreClient.make()
            try await collector.run(client: client, onSweep: report)
        }
    }
}
