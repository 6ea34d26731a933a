import ArgumentParser
import Foundation
import NBDClient
import NBDProtocol

/// `swiftxen nbd list|info|copy|serve`: nbdinfo, nbdcopy and an NBD server over NBDClient and NBDServer.
struct NBDCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nbd", abstract: "NBD: list exports, show an export and its map, copy, serve.",
        subcommands: [List.self, Info.self, NBDCopy.self, NBDServe.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List the exports of an NBD server (nbdinfo --list).")
        @Argument(help: "NBD URI, e.g. nbd+unix:///?socket=/tmp/sock or nbds://host/") var uri: String

        func run() async throws {
            let parsed = try NBDURI(parsing: uri)
            let channel = try await NBDChannel.connect(to: parsed.endpoint)
            let tls = parsed.tls ? NBDTLSOptions(uri: parsed) : nil
            switch await NBDClient.listWithDescriptions(channel, tls: tls) {
            case .success(let exports):
                for export in exports {
                    print(
                        export.description.isEmpty
                            ? "export=\(export.name)" : "export=\(export.name)\t\(export.description)")
                }
            case .failure(let error): throw ValidationError(error.description)
            }
        }
    }

    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "info",
            abstract: "Show an export: size, flags, limits (nbdinfo), or its allocation map (nbdinfo --map).")
        @Argument(help: "NBD URI") var uri: String
        @Flag(help: "Print only the size in bytes.") var size = false
        @Flag(help: "Print the base:allocation map.") var map = false
        @Flag(help: "Print JSON, as nbdinfo --json does.") var json = false

        func run() async throws {
            let client = try await NBDClient.connect(uri: uri)
            do {
                if size {
                    print(client.size)
                } else if map {
                    let extents = try await Self.map(client)
                    print(json ? NBDInfoFormat.mapJSON(extents) : NBDInfoFormat.mapText(extents), terminator: "")
                } else {
                    let text = json ? NBDInfoFormat.json(client, uri: uri) : NBDInfoFormat.text(client, uri: uri)
                    print(text, terminator: "")
                }
            } catch {
                await client.disconnect()
                throw error
            }
            await client.disconnect()
        }

        /// The whole export's map, adjacent extents of one type merged.
        static func map(_ client: NBDClient) async throws -> [(offset: UInt64, length: UInt64, type: UInt64)] {
            guard client.session.metaContexts["base:allocation"] != nil else {
                throw ValidationError("the server does not offer base:allocation")
            }
            var result: [(offset: UInt64, length: UInt64, type: UInt64)] = []
            var at: UInt64 = 0
            while at < client.size {
                let extents = try await client.blockStatus(at: at, length: min(client.size - at, 1 << 32))
                guard !extents.isEmpty else { break }
                for extent in extents where at < client.size && extent.length > 0 {
                    let length = min(extent.length, client.size - at)
                    if let last = result.last, last.type == extent.flags {
                        result[result.count - 1].length += length
                    } else {
                        result.append((at, length, extent.flags))
                    }
                    at += length
                }
            }
            return result
        }
    }
}

/// nbdinfo's output formats.
enum NBDInfoFormat {
    static func describe(_ type: UInt64) -> String {
        switch type {
        case 0: "data"
        case 1: "hole"
        case 2: "zero"
        case 3: "hole,zero"
        default: "unknown (\(type))"
        }
    }

    static func mapText(_ extents: [(offset: UInt64, length: UInt64, type: UInt64)]) -> String {
        extents.map { extent in
            pad(extent.offset, 10) + "  " + pad(extent.length, 10) + "  " + pad(extent.type, 3) + "  "
                + describe(extent.type) + "\n"
        }.joined()
    }

    static func mapJSON(_ extents: [(offset: UInt64, length: UInt64, type: UInt64)]) -> String {
        "[\n"
            + extents.map {
                "{ \"offset\": \($0.offset), \"length\": \($0.length), \"type\": \($0.type), \"description\": \"\(describe($0.type))\"}"
            }.joined(separator: ",\n") + "\n]\n"
    }

    private static func pad(_ value: UInt64, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: " ", count: max(0, width - text.count)) + text
    }

    /// Each capability nbdinfo prints, in its order.
    private static func capabilities(_ flags: NBDTransmissionFlags) -> [(String, Bool)] {
        [
            ("is_rotational", flags.contains(.rotational)), ("is_read_only", flags.contains(.readOnly)),
            ("can_cache", flags.contains(.sendCache)), ("can_df", flags.contains(.sendDF)),
            ("can_fast_zero", flags.contains(.sendFastZero)), ("can_flush", flags.contains(.sendFlush)),
            ("can_fua", flags.contains(.sendFUA)), ("can_multi_conn", flags.contains(.canMultiConn)),
            ("can_trim", flags.contains(.sendTrim)), ("can_zero", flags.contains(.sendWriteZeroes)),
        ]
    }

    private static func protocolLine(_ session: NBDSession) -> String {
        session.usedExportName ? "newstyle" : "newstyle-fixed"
    }

    static func text(_ client: NBDClient, uri: String) -> String {
        let session = client.session
        var lines = [
            "protocol: \(protocolLine(session)) \(session.tls ? "with" : "without") TLS, using "
                + (session.extendedHeaders ? "extended" : session.structuredReplies ? "structured" : "simple")
                + " packets",
            "export=\"\(session.export)\":",
        ]
        if let description = session.description { lines.append("\tdescription: \(description)") }
        lines += ["\texport-size: \(client.size)", "\turi: \(uri)", "\tcontexts:"]
        lines += session.metaContexts.keys.sorted().map { "\t\t\($0)" }
        lines += capabilities(client.flags).map { "\t\($0.0): \($0.1)" }
        lines += [
            "\tblock_size_minimum: \(session.blockSize.minimum)",
            "\tblock_size_preferred: \(session.blockSize.preferred)",
            "\tblock_size_maximum: \(session.blockSize.maximum)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    static func json(_ client: NBDClient, uri: String) -> String {
        let session = client.session
        func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        var fields = ["\t\"export-name\": \(quoted(session.export))"]
        if let description = session.description { fields.append("\t\"description\": \(quoted(description))") }
        fields.append("\t\"uri\": \(quoted(uri))")
        let contexts = session.metaContexts.keys.sorted().map { "\t\t\(quoted($0))" }.joined(separator: ",\n")
        fields.append("\t\"contexts\": [\n\(contexts)\n\t]")
        fields += capabilities(client.flags).map { "\t\"\($0.0)\": \($0.1)" }
        fields += [
            "\t\"block_size_minimum\": \(session.blockSize.minimum)",
            "\t\"block_size_preferred\": \(session.blockSize.preferred)",
            "\t\"block_size_maximum\": \(session.blockSize.maximum)", "\t\"export-size\": \(client.size)",
        ]
        return """
            {
            "protocol": "\(protocolLine(session))",
            "TLS": \(session.tls),
            "structured": \(session.structuredReplies),
            "exports": [
            \t{
            \(fields.joined(separator: ",\n"))
            \t} ]
            }

            """
    }
}
