// NBD URIs (NetworkBlockDevice/nbd doc/uri.md): nbd://, nbds://, nbd+unix://, nbds+unix://.

/// Where an NBD server listens.
///
/// OCaml: none (ocaml-nbd takes a host and port)
public enum NBDEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// A TCP host (name, IPv4 or IPv6 literal) and port.
    case tcp(host: String, port: Int)
    /// A unix domain socket path.
    case unix(path: String)

    /// A readable rendering.
    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// Why a URI was rejected.
///
/// OCaml: none
public enum NBDURIError: Error, Sendable, Equatable, CustomStringConvertible {
    case unsupportedScheme(String)
    case malformed(String)

    /// A readable rendering.
    public var description: String {
        switch self {
        case .unsupportedScheme(let scheme): "unsupported NBD URI scheme \(scheme)"
        case .malformed(let why): "malformed NBD URI: \(why)"
        }
    }
}

/// A parsed NBD URI.
///
/// OCaml: none (libnbd: `nbd_connect_uri`)
public struct NBDURI: Sendable, Equatable, CustomStringConvertible {
    /// Where to connect.
    public var endpoint: NBDEndpoint
    /// The export name (the path without its leading slash, percent-decoded).
    public var export: String
    /// True for `nbds` schemes: TLS is mandatory and never falls back to plaintext.
    public var tls: Bool
    /// Every query key and value, percent-decoded (`socket`, `tls-hostname`, `tls-verify-peer`, ...).
    public var query: [String: String]

    /// The hostname to check the server certificate against (`tls-hostname`, else the TCP host).
    public var tlsHostname: String? {
        if let name = query["tls-hostname"] { return name }
        if case .tcp(let host, _) = endpoint { return host }
        return nil
    }

    /// False only when the URI says `tls-verify-peer=false`.
    public var tlsVerifyPeer: Bool {
        guard let value = query["tls-verify-peer"]?.lowercased() else { return true }
        return !["false", "0", "no", "off"].contains(value)
    }

    /// Memberwise initializer.
    public init(endpoint: NBDEndpoint, export: String = "", tls: Bool = false, query: [String: String] = [:]) {
        self.endpoint = endpoint
        self.export = export
        self.tls = tls
        self.query = query
    }

    /// Parses `nbd[s][+unix|+tcp]://[host[:port]]/[export][?key=value&...]`.
    ///
    /// OCaml: none (libnbd: `nbd_connect_uri`)
    public init(parsing text: String) throws(NBDURIError) {
        guard let schemeEnd = text.firstRange(of: "://") else { throw .malformed("no scheme in \(text)") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        let tls: Bool
        let unix: Bool
        switch scheme {
        case "nbd", "nbd+tcp": (tls, unix) = (false, false)
        case "nbds", "nbds+tcp": (tls, unix) = (true, false)
        case "nbd+unix": (tls, unix) = (false, true)
        case "nbds+unix": (tls, unix) = (true, true)
        default: throw .unsupportedScheme(scheme)
        }
        var rest = Substring(text[schemeEnd.upperBound...])
        var queryText = Substring("")
        if let mark = rest.firstIndex(of: "?") {
            queryText = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        if let hash = queryText.firstIndex(of: "#") { queryText = queryText[..<hash] }
        let authority: Substring
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = ""
        }
        var query: [String: String] = [:]
        for pair in queryText.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            query[try Self.decode(parts[0])] = parts.count > 1 ? try Self.decode(parts[1]) : ""
        }
        let export = try Self.decode(path)
        if unix {
            guard authority.isEmpty || authority == "localhost" else {
                throw .malformed("nbd+unix URIs take no host")
            }
            guard let socket = query["socket"], !socket.isEmpty else { throw .malformed("missing ?socket=") }
            self.init(endpoint: .unix(path: socket), export: export, tls: tls, query: query)
            return
        }
        let hostPort = authority.split(separator: "@").last.map(Substring.init) ?? ""
        var host: String
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw .malformed("unterminated IPv6 literal") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw .malformed("junk after IPv6 literal")
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            portText = hostPort[hostPort.index(after: colon)...]
        } else {
            host = String(hostPort)
        }
        if host.isEmpty { host = "localhost" }
        var port = 10809
        if let portText, !portText.isEmpty {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw .malformed("bad port \(portText)")
            }
            port = value
        }
        self.init(
            endpoint: .tcp(host: try Self.decode(Substring(host)), port: port), export: export, tls: tls, query: query)
    }

    /// Percent-decodes a URI component.
    private static func decode(_ text: Substring) throws(NBDURIError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw .malformed("bad percent escape in \(text)")
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A readable rendering.
    public var description: String {
        let scheme = (tls ? "nbds" : "nbd") + (endpoint.isUnix ? "+unix" : "")
        var text = "\(scheme)://"
        if case .tcp(let host, let port) = endpoint {
            text += host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
        text += "/\(export)"
        let pairs = query.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        if !pairs.isEmpty { text += "?" + pairs.joined(separator: "&") }
        return text
    }
}

extension NBDEndpoint {
    /// True for unix sockets.
    public var isUnix: Bool {
        if case .unix = self { return true }
        return false
    }
}
