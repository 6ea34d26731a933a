/// Helpers for the NUL-separated string payloads most xenstore messages carry.
///
/// OCaml: `Xs_protocol.data_concat` / `Xs_protocol.split_string` and xenstored's `get_strings` / `onearg`
enum XenStorePayload {
    static let nul: UInt8 = 0

    /// Each string followed by a NUL. OCaml: `Xs_protocol.data_concat`
    static func strings(_ parts: [String]) -> [UInt8] {
        var bytes: [UInt8] = []
        for part in parts {
            bytes.append(contentsOf: part.utf8)
            bytes.append(nul)
        }
        return bytes
    }

    /// Splits a payload made of NUL-terminated strings; nil if the last one lacks its NUL (an empty payload
    /// is zero strings). OCaml: `Xs_protocol.split_string '\000'`
    static func terminatedStrings(_ payload: [UInt8]) -> [String]? {
        guard payload.isEmpty || payload.last == nul else { return nil }
        // One pass over the bytes, one String per part and no intermediate array of slices: every request
        // the server handles is decoded here.
        return payload.withUnsafeBufferPointer { bytes in
            var parts: [String] = []
            var start = 0
            for index in 0..<bytes.count where bytes[index] == nul {
                parts.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
                start = index + 1
            }
            return parts
        }
    }

    /// Exactly one NUL-terminated string, as xenstored's `onearg`.
    static func single(_ payload: [UInt8], _ type: XenStoreMessageType) throws(XenStoreProtocolError) -> String {
        // The common case, checked without building an array: the only NUL is the last byte.
        if let first = payload.firstIndex(of: nul), first == payload.count - 1 {
            return payload.withUnsafeBufferPointer {
                String(decoding: UnsafeBufferPointer(rebasing: $0[0..<first]), as: UTF8.self)
            }
        }
        guard let parts = terminatedStrings(payload), parts.count == 1 else {
            throw .malformedPayload(type: type, reason: "expected exactly one NUL-terminated string")
        }
        return parts[0]
    }

    /// At least `count` NUL-terminated strings, as xenstored's `get_strings`.
    static func atLeast(
        _ count: Int, _ payload: [UInt8], _ type: XenStoreMessageType
    ) throws(XenStoreProtocolError) -> [String] {
        guard let parts = terminatedStrings(payload), parts.count >= count else {
            throw .malformedPayload(type: type, reason: "expected \(count) NUL-terminated strings")
        }
        return parts
    }

    /// A payload's text without one trailing NUL. OCaml: `Xs_protocol.get_data`
    static func text(_ payload: [UInt8]) -> String {
        let body = payload.last == nul ? payload.dropLast() : payload[...]
        return String(decoding: body, as: UTF8.self)
    }

    /// C's `atoi`: optional blanks, optional sign, decimal digits up to the first other character; 0 if none.
    /// xenstored reads domids, ports and offsets this way, so an empty string is 0.
    static func cInteger(_ text: String) -> Int64 {
        var bytes = text.utf8.drop(while: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        var value: Int64 = 0
        for byte in bytes {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { break }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            if overflow1 || overflow2 { return negative ? Int64.min : Int64.max }
            value = sum
        }
        return negative ? -value : value
    }
}
