import XenCore
import XenStoreProtocol

/// The xenstore wire format as a guest (requests) or a server (replies) writes it: the incremental packet
/// parser fed in any chunking, then the request and the reply payload decoders on every packet. A decoded
/// value must survive encoding and decoding again unchanged, and paths go through the path rules.
///
/// Input: one byte choosing the chunk size (0: all at once), then the byte stream.
enum XenStorePacketTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let chunk = Int(input.byte())
        let stream = input.rest()
        var parser = XenStorePacketParser()
        var offset = 0
        var consumed = 0
        while offset < stream.count {
            let end = chunk == 0 ? stream.count : min(stream.count, offset + chunk)
            parser.append(stream[offset..<end])
            offset = end
            while true {
                let packet: XenStorePacket?
                do {
                    packet = try parser.next()
                } catch {
                    // The parser is poisoned: it must keep failing rather than resynchronise on garbage.
                    require((try? parser.next()) == nil, "a failed parser produced a packet")
                    return
                }
                guard let packet else { break }
                consumed += XenStoreHeader.size + packet.payload.count
                check(packet)
            }
            require(parser.bufferedByteCount == offset - consumed, "parser lost or invented bytes")
        }
    }

    static func check(_ packet: XenStorePacket) {
        require(packet.payload.count <= XenStoreLimits.payloadMax, "oversize payload accepted")
        var again = XenStorePacketParser()
        again.append(packet.bytes)
        require((try? again.next()) == packet, "packet does not survive re-encoding")

        if let request = try? XenStoreRequest(decoding: packet) {
            let encoded = request.packet(requestID: packet.requestID, transactionID: packet.transactionID)
            require(encoded.type == packet.type, "request type changed: \(packet.type) → \(encoded.type)")
            require((try? XenStoreRequest(decoding: encoded)) == request, "request \(request) does not round-trip")
            for path in paths(of: request) { exercise(path) }
        }
        if let reply = try? XenStoreReply(decoding: packet) {
            let encoded = reply.packet(requestID: packet.requestID, transactionID: packet.transactionID)
            require((try? XenStoreReply(decoding: encoded)) == reply, "reply \(reply) does not round-trip")
        }
    }

    static func paths(of request: XenStoreRequest) -> [String] {
        switch request {
        case .read(let path), .mkdir(let path), .rm(let path), .directory(let path), .getPermissions(let path),
            .write(let path, _), .directoryPart(let path, _), .setPermissions(let path, _), .watch(let path, _),
            .unwatch(let path, _):
            [path]
        default: []
        }
    }

    /// The path rules as a server applies them for an unprivileged domain and for dom0.
    static func exercise(_ path: String) {
        for domain: DomainID in [0, 5] {
            guard let absolute = try? XenStorePath.canonicalize(path, for: domain, allowSpecial: true) else { continue }
            if XenStorePath.isSpecial(absolute) { continue }
            require(absolute.utf8.first == UInt8(ascii: "/"), "canonical path \(absolute) is not absolute")
            require(XenStorePath.isAtOrBelow(absolute, "/"), "\(absolute) not below /")
            if let parent = XenStorePath.parent(of: absolute) {
                require(
                    XenStorePath.join(parent, XenStorePath.basename(of: absolute)) == absolute,
                    "parent/basename of \(absolute) do not join back")
                require(XenStorePath.isAtOrBelow(absolute, parent), "\(absolute) not below its parent")
            }
        }
    }
}
