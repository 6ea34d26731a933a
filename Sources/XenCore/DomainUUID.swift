/// A domain's 128-bit UUID (`xen_domain_handle_t`), printed in the canonical lower-case 8-4-4-4-12 form.
///
/// libxl names per-domain files after it (`userdata-d.<domid>.<uuid>.<userid>`), so the text form must match
/// `LIBXL_UUID_FMT` exactly. OCaml: `Uuidm.t` (as used by xenopsd); C: `libxl_uuid`.
public struct DomainUUID: Hashable, Sendable, CustomStringConvertible {
    /// The 16 bytes, most significant first (the order `libxl_uuid_bytearray` returns).
    public let bytes: [UInt8]

    /// A UUID from exactly 16 bytes; nil for any other length.
    ///
    /// C: `libxl_uuid_from_bytearray`
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case); nil for anything else.
    ///
    /// C: `libxl_uuid_from_string`
    public init?(_ text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 36 else { return nil }
        var result: [UInt8] = []
        result.reserveCapacity(16)
        var index = 0
        while index < 36 {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard utf8[index] == UInt8(ascii: "-") else { return nil }
                index += 1
                continue
            }
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            result.append(high << 4 | low)
            index += 2
        }
        self.bytes = result
    }

    /// The all-zero UUID (`libxl_uuid_clear`), which libxl treats as "no UUID".
    public static let zero = DomainUUID(uncheckedBytes: [UInt8](repeating: 0, count: 16))

    private init(uncheckedBytes: [UInt8]) { self.bytes = uncheckedBytes }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The canonical lower-case text form.
    ///
    /// C: `LIBXL_UUID_FMT`
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
}
