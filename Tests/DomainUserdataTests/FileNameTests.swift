import DomainUserdata
import Testing
import XenCore

@Suite struct FileNameTests {
    @Test func namesAreLibxlsByteForByte() {
        // libxl: XEN_LIB_DIR "/userdata-%s.%u.%s.%s" with wh, domid, LIBXL_UUID_FMT, userid.
        let data = UserdataFileName(kind: .data, domid: 5, uuid: uuidA, userid: "xl")
        #expect(data.description == "userdata-d.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl")
        #expect(data.path(in: "/var/lib/xen") == "/var/lib/xen/userdata-d.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl")
        #expect(data.path(in: "/srv/") == "/srv/userdata-d.5.6c3e7f2a-1b4d-4e8f-9a0b-c1d2e3f40516.xl")
        let new = UserdataFileName(kind: .new, domid: 32752, uuid: uuidB, userid: "libxl-json")
        #expect(new.description == "userdata-n.32752.00112233-4455-6677-8899-aabbccddeeff.libxl-json")
        let lock = UserdataFileName.lock(domid: 0, uuid: uuidB)
        #expect(lock.description == "userdata-l.0.00112233-4455-6677-8899-aabbccddeeff.domain-userdata-lock")
        #expect(UserdataStore.defaultRoot == "/var/lib/xen")
    }

    @Test func uuidFormatsLowercaseAndParsesEitherCase() {
        let bytes: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF, 0, 1, 0x0A, 0xB0, 0xFF, 0x7F, 9, 8, 7, 6, 5, 4]
        let uuid = DomainUUID(bytes: bytes)!
        #expect(uuid.description == "deadbeef-0001-0ab0-ff7f-090807060504")
        #expect(DomainUUID("DEADBEEF-0001-0AB0-FF7F-090807060504") == uuid)
        #expect(DomainUUID(bytes: [1, 2, 3]) == nil)
        #expect(DomainUUID("deadbeef-0001-0ab0-ff7f-09080706050") == nil)
        #expect(DomainUUID("deadbeef00001-0ab0-ff7f-090807060504") == nil)
        #expect(DomainUUID("deadbeef-0001-0ab0-ff7f-09080706050g") == nil)
    }

    @Test func parsesWhatItFormats() {
        for kind in UserdataFileKind.allCases {
            let name = UserdataFileName(kind: kind, domid: 417, uuid: uuidA, userid: "libvirt-xml")
            #expect(UserdataFileName(parsing: name.description) == name)
        }
        // Userids may contain dots; everything after the uuid's dot is the userid.
        #expect(UserdataFileName(parsing: "userdata-d.1.\(uuidA).a.b.c")?.userid == "a.b.c")
    }

    @Test(arguments: [
        "userdata-d5.\(uuidA).xl",  // no dot after the kind (the classic mistake)
        "userdata-x.5.\(uuidA).xl",  // unknown kind
        "userdata-d.05.\(uuidA).xl",  // non-canonical domid
        "userdata-d.65536.\(uuidA).xl",  // domid out of range
        "userdata-d..\(uuidA).xl",  // empty domid
        "userdata-d.5.\(uuidA.description.uppercased()).xl",  // libxl prints lowercase
        "userdata-d.5.\(uuidA).",  // empty userid
        "userdata-d.5.\(uuidA)",  // no userid
        "qemu-save.5",
        "",
    ])
    func rejectsForeignNames(_ name: String) {
        #expect(UserdataFileName(parsing: name) == nil)
    }

    @Test func destroyPatternIsLibxlsGlob() {
        func matches(_ name: String, _ domid: DomainID = 5, _ uuid: DomainUUID = uuidA) -> Bool {
            UserdataFileName.matchesDestroyPattern(Array(name.utf8), domid: domid, uuid: uuid)
        }
        // userdata-?.5.<uuid>.*
        #expect(matches("userdata-d.5.\(uuidA).xl"))
        #expect(matches("userdata-n.5.\(uuidA).libxl-json"))
        #expect(matches("userdata-q.5.\(uuidA).anything"))
        #expect(matches("userdata-d.5.\(uuidA)."))
        // The lock is skipped (libxl's strstr), whatever its kind letter.
        #expect(!matches("userdata-l.5.\(uuidA).domain-userdata-lock"))
        #expect(!matches("userdata-d.5.\(uuidA).my-domain-userdata-lock-2"))
        // Other domains, other uuids, prefixes of the domid.
        #expect(!matches("userdata-d.51.\(uuidA).xl"))
        #expect(!matches("userdata-d.5.\(uuidB).xl"))
        #expect(!matches("userdata-d.5.\(uuidA)"))
        #expect(!matches("userdata-dd.5.\(uuidA).xl"))
        #expect(!matches("xuserdata-d.5.\(uuidA).xl"))
    }

    @Test func useridValidation() throws {
        #expect(try UserdataID(validating: "xl") == .xl)
        #expect(try UserdataID(validating: "libxl-json") == .libxlJSON)
        #expect(try UserdataID(validating: "libvirt-xml") == .libvirtXML)
        #expect(UserdataID.domainUserdataLock.rawValue == "domain-userdata-lock")
        #expect(UserdataID.domainUserdataLock.isReserved)
        #expect(!UserdataID.xl.isReserved)
        _ = try UserdataID(validating: String(repeating: "a", count: UserdataID.maximumLength))
        for bad in [
            "", "a/b", "/", "with space", "tab\t", "nul\u{0}", "é", "\u{7F}",
            String(repeating: "a", count: UserdataID.maximumLength + 1),
        ] {
            #expect(throws: UserdataError.self) { try UserdataID(validating: bad) }
        }
    }
}
