import CXen
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What dom0 must offer before anything else can be tested: the hypervisor, the Xen device nodes, the
/// running xenstored, and libxenctrl's view of domain 0.
enum HypervisorChecks {
    static func run(_ report: Report) {
        report.check("hypervisor: /sys/hypervisor reports Xen 4.17") {
            let type = Files.trimmed("/sys/hypervisor/type")
            try require(type == "xen", "type is \(type ?? "missing")")
            let major = Files.trimmed("/sys/hypervisor/version/major")
            let minor = Files.trimmed("/sys/hypervisor/version/minor")
            try require(major == "4" && minor == "17", "version \(major ?? "?").\(minor ?? "?")")
        }
        report.check("hypervisor: /proc/xen/capabilities says control_d") {
            let caps = Files.trimmed("/proc/xen/capabilities")
            try require(caps == "control_d", "capabilities \(caps ?? "missing") (xenfs not mounted?)")
        }
        for device in ["xenbus", "xenbus_backend", "privcmd", "evtchn", "gntdev", "gntalloc"] {
            report.check("devices: /dev/xen/\(device) is a character device") {
                try require(Files.isCharacterDevice("/dev/xen/\(device)"), "missing or not a char device")
            }
        }
        report.check("devices: xenstored socket /var/run/xenstored/socket") {
            try require(Files.isSocket("/var/run/xenstored/socket"), "no unix socket")
        }
        report.check("libxenctrl: xc_version and domain 0 info") {
            guard let xch = xc_interface_open(nil, nil, 0) else {
                throw CheckFailure(errnoText("xc_interface_open"))
            }
            defer { xc_interface_close(xch) }
            let version = xc_version(xch, XENVER_version, nil)
            try require(version >> 16 == 4 && version & 0xFFFF == 17, "xc_version \(version >> 16).\(version & 0xFFFF)")
            var info = xc_domaininfo_t()
            let count = xc_domain_getinfolist(xch, UInt32(DomainID.dom0.rawValue), 1, &info)
            try require(count == 1, errnoText("xc_domain_getinfolist returned \(count)"))
            try require(info.domain == DomainID.dom0.rawValue, "first domain is \(info.domain)")
            try require(info.tot_pages > 0, "domain 0 has no pages")
        }
    }
}
