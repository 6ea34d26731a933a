/// A vbd's xenstore id from a Linux device name or a number: "51712", "xvda", "/dev/xvdb1", "sda", "hdc".
///
/// The encodings are Xen's `docs/misc/vbd-interface.txt`: xvd disks 0-15 with partitions 0-15 are
/// `(202 << 8) | (disk << 4) | part`; larger ones use the extended form `(1 << 28) | (disk << 8) | part`;
/// sd is major 8 (disks 0-15), hd majors 3 and 22.
///
/// OCaml: `Device_number.of_linux` / `Device_number.to_xenstore_key` (mirage-block-xen)
public enum VirtualDeviceNumber {
    /// The xenstore id for `name`, or nil when it is neither a number nor a supported Linux name.
    ///
    /// OCaml: `Device_number.of_string` + `to_xenstore_key`
    public static func parse(_ name: String) -> UInt32? {
        if let number = UInt32(name) { return number }
        var text = Substring(name)
        if text.hasPrefix("/dev/") { text = text.dropFirst(5) }
        for (prefix, kind) in [("xvd", 0), ("sd", 1), ("hd", 2)] where text.hasPrefix(prefix) {
            let rest = text.dropFirst(prefix.count)
            let letters = rest.prefix { $0 >= "a" && $0 <= "z" }
            let digits = rest.dropFirst(letters.count)
            guard !letters.isEmpty, letters.count <= 3 else { return nil }
            var disk = 0
            for letter in letters.utf8 { disk = disk * 26 + Int(letter - UInt8(ascii: "a")) + 1 }
            disk -= 1
            var part = 0
            if !digits.isEmpty {
                guard let value = Int(digits), value >= 0 else { return nil }
                part = value
            }
            switch kind {
            case 0:
                if disk < 16, part < 16 { return UInt32((202 << 8) | (disk << 4) | part) }
                guard disk < (1 << 20), part < 256 else { return nil }
                return UInt32((1 << 28) | (disk << 8) | part)
            case 1:
                guard disk < 16, part < 16 else { return nil }
                return UInt32((8 << 8) | (disk << 4) | part)
            default:
                guard disk < 4, part < 64 else { return nil }
                let major = disk < 2 ? 3 : 22
                return UInt32((major << 8) | ((disk % 2) << 6) | part)
            }
        }
        return nil
    }
}
