/// What a blkif backend publishes in its xenstore directory: the device properties and every feature key of
/// blkif.h. Parsed from and rendered to key/value pairs, so the handshake code stays free of string fiddling.
///
/// OCaml: `Blkproto.DiskInfo` + `Blkproto.FeatureIndirect` (mirage reads only sectors, sector-size, mode and
/// feature-max-indirect-segments; the other keys here are blkif.h's)
public struct BlkifBackendInfo: Sendable, Equatable {
    /// Size in 512-byte units (`sectors`; always 512-byte units whatever `sector-size` says).
    public var sectors: UInt64 = 0
    /// Logical sector size (`sector-size`).
    public var sectorSize: Int = 512
    /// Physical sector size (`physical-sector-size`).
    public var physicalSectorSize: Int = 512
    /// `info` bits (`VDISK_*`).
    public var info: UInt32 = 0
    /// `mode`: "w" read-write, "r" read-only.
    public var readWrite: Bool = true
    /// `feature-barrier`.
    public var barrier = false
    /// `feature-flush-cache`.
    public var flushCache = false
    /// `feature-discard` (with `discard-granularity`, `discard-alignment`, `discard-secure`).
    public var discard = false
    /// `discard-granularity` in bytes.
    public var discardGranularity: UInt64 = 0
    /// `discard-alignment` in bytes.
    public var discardAlignment: UInt64 = 0
    /// `discard-secure`.
    public var discardSecure = false
    /// `feature-persistent`.
    public var persistent = false
    /// `feature-max-indirect-segments` (0: no indirect requests).
    public var maxIndirectSegments = 0
    /// `max-ring-page-order`.
    public var maxRingPageOrder = 0
    /// `multi-queue-max-queues` (1 when absent).
    public var maxQueues = 1

    /// Defaults: nothing advertised.
    public init() {}

    /// True when the disk may be written (`mode` is w and the READONLY bit is clear).
    public var isWritable: Bool { readWrite && info & Blkif.infoReadOnly == 0 }

    /// The feature keys, written before the backend goes to InitWait.
    ///
    /// OCaml: `Blkback.run` writes (a subset of) these
    public var featureKeys: [(String, String)] {
        var keys: [(String, String)] = [
            ("feature-barrier", barrier ? "1" : "0"),
            ("feature-flush-cache", flushCache ? "1" : "0"),
            ("feature-discard", discard ? "1" : "0"),
            ("feature-persistent", persistent ? "1" : "0"),
            ("max-ring-page-order", String(maxRingPageOrder)),
            ("multi-queue-max-queues", String(maxQueues)),
        ]
        if discard {
            keys += [
                ("discard-granularity", String(discardGranularity)),
                ("discard-alignment", String(discardAlignment)),
                ("discard-secure", discardSecure ? "1" : "0"),
            ]
        }
        // blkif.h: do not create the key unless INDIRECT is handled.
        if maxIndirectSegments > 0 { keys.append(("feature-max-indirect-segments", String(maxIndirectSegments))) }
        return keys
    }

    /// The device-property keys, written before the backend goes to Connected.
    ///
    /// OCaml: `Blkproto.DiskInfo.to_assoc_list`
    public var deviceKeys: [(String, String)] {
        [
            ("sectors", String(sectors)),
            ("sector-size", String(sectorSize)),
            ("physical-sector-size", String(physicalSectorSize)),
            ("info", String(info)),
        ]
    }

    /// Reads the keys a frontend cares about from `keys` (relative names). Missing feature keys mean "off";
    /// malformed values are errors, since a backend that writes them cannot be trusted with the disk.
    ///
    /// OCaml: `Blkproto.DiskInfo.of_assoc_list` (plus the feature keys mirage ignores)
    public init(keys: [String: String]) throws(BlkifKeyError) {
        func number<T: FixedWidthInteger>(_ key: String, default value: T) throws(BlkifKeyError) -> T {
            guard let text = keys[key] else { return value }
            guard let parsed = T(text.trimmingCharacters(in: " \n\0")) else { throw .malformed(key: key, value: text) }
            return parsed
        }
        func flag(_ key: String) throws(BlkifKeyError) -> Bool { try number(key, default: 0 as UInt64) != 0 }
        sectors = try number("sectors", default: 0)
        sectorSize = try number("sector-size", default: 512)
        physicalSectorSize = try number("physical-sector-size", default: sectorSize)
        info = try number("info", default: 0)
        if let mode = keys["mode"] {
            switch mode.trimmingCharacters(in: " \n\0") {
            case "w": readWrite = true
            case "r": readWrite = false
            default: throw .malformed(key: "mode", value: mode)
            }
        }
        barrier = try flag("feature-barrier")
        flushCache = try flag("feature-flush-cache")
        discard = try flag("feature-discard")
        discardGranularity = try number("discard-granularity", default: 0)
        discardAlignment = try number("discard-alignment", default: 0)
        discardSecure = try flag("discard-secure")
        persistent = try flag("feature-persistent")
        maxIndirectSegments = try number("feature-max-indirect-segments", default: 0)
        maxRingPageOrder = try number("max-ring-page-order", default: 0)
        if keys["max-ring-page-order"] == nil, let pages = keys["max-ring-pages"] {
            // Deprecated key: a page count, not an order.
            guard let count = Int(pages), count > 0 else { throw .malformed(key: "max-ring-pages", value: pages) }
            maxRingPageOrder = Int.bitWidth - 1 - count.leadingZeroBitCount
        }
        maxQueues = try number("multi-queue-max-queues", default: 1)
        guard sectorSize >= 512, sectorSize.nonzeroBitCount == 1, sectorSize <= 65536 else {
            throw .malformed(key: "sector-size", value: String(sectorSize))
        }
        guard maxRingPageOrder >= 0, maxRingPageOrder <= 16 else {
            throw .malformed(key: "max-ring-page-order", value: String(maxRingPageOrder))
        }
        guard maxQueues >= 1, maxIndirectSegments >= 0 else {
            throw .malformed(key: "multi-queue-max-queues", value: String(maxQueues))
        }
    }

    /// Every key name read by ``init(keys:)``.
    public static let keyNames = [
        "sectors", "sector-size", "physical-sector-size", "info", "mode", "feature-barrier", "feature-flush-cache",
        "feature-discard", "discard-granularity", "discard-alignment", "discard-secure", "feature-persistent",
        "feature-max-indirect-segments", "max-ring-page-order", "max-ring-pages", "multi-queue-max-queues",
    ]
}

/// A xenstore key held a value the other end should not have written.
///
/// OCaml: `Blkproto` returns `Msg` errors for these
public enum BlkifKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `key` holds `value`, which is not what blkif.h allows there.
    case malformed(key: String, value: String)
    /// A required key is absent.
    case missing(key: String)

    public var description: String {
        switch self {
        case .malformed(let key, let value): "xenstore key \(key) holds malformed value \"\(value)\""
        case .missing(let key): "xenstore key \(key) is missing"
        }
    }
}

extension String {
    /// Drops leading and trailing characters in `set` (no Foundation in library targets).
    func trimmingCharacters(in set: String) -> String {
        var view = Substring(self)
        while let first = view.first, set.contains(first) { view = view.dropFirst() }
        while let last = view.last, set.contains(last) { view = view.dropLast() }
        return String(view)
    }
}
