import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// A name a server certificate carries, and RFC 6125 matching of a hostname against them.
enum CertificateName: Sendable, Equatable {
    case dns(String)
    case ip([UInt8])

    /// The DNS and IP subject alternative names (the common name is not used, as RFC 6125 advises).
    static func names(of certificate: NIOSSLCertificate) -> [CertificateName] {
        var names: [CertificateName] = []
        for name in certificate._subjectAlternativeNames() {
            let bytes = name.contents.withUnsafeBufferPointer { Array($0) }
            if name.nameType == .dnsName { names.append(.dns(String(decoding: bytes, as: UTF8.self).lowercased())) }
            if name.nameType == .ipAddress { names.append(.ip(bytes)) }
        }
        return names
    }

    /// True when `hostname` (a DNS name or an IP literal) is one of `names`. Wildcards match one whole
    /// left-most label only.
    static func matches(_ names: [CertificateName], hostname: String) -> Bool {
        let host =
            hostname.lowercased().hasSuffix(".") ? String(hostname.lowercased().dropLast()) : hostname.lowercased()
        if let address = ipBytes(host) {
            return names.contains { $0 == .ip(address) }
        }
        return names.contains { name in
            switch name {
            case .dns(let pattern): matchDNS(pattern: pattern, host: host)
            case .ip: false
            }
        }
    }

    private static func matchDNS(pattern: String, host: String) -> Bool {
        if pattern == host { return true }
        guard pattern.hasPrefix("*."), let dot = host.firstIndex(of: ".") else { return false }
        return host[dot...] == pattern.dropFirst() && host[..<dot].isEmpty == false
    }

    private static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
