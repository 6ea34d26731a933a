/// A domain's 16-byte handle (`xen_domain_handle_t`), printed as libxl prints it in userdata file names.
///
/// libxl: `libxl_uuid` with `LIBXL_UUID_FMT` (`%02hhx` ×16, lowercase, 8-4-4-4-12).
public struct DomainUUID: Hashable, Sendable, CustomStringConvertible {
    /// The raw handle bytes, in hypervisor order.
    public let bytes: [UInt8]

    /// Wraps 16 handle bytes; nil for any other count.
    ///
    /// libxl: `libxl_uuid_copy` from `xc_domaininfo_t.handle`.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses the 36-character 8-4-4-4-12 form (either case); nil for anything else.
    ///
    /// libxl: `libxl_uuid_from_string`.
    public init?(_ text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 36 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var index = 0
        while index < 36 {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard utf8[index] == UInt8(ascii: "-") else { return nil }
                index += 1
                continue
            }
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        self.bytes = out
    }

    /// The lowercase 8-4-4-4-12 text, byte-for-byte as `LIBXL_UUID_FMT` prints it.
    ///
    /// libxl: `libxl__uuid2string` / `LIBXL_UUID_FMT`.
    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { out.append(UInt8(ascii: "-")) }
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func nibble(_ char: UInt8) -> UInt8? {
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): char - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
