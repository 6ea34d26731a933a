import CXen
import Testing

/// The shim imports and exposes the Xen ABI headers of libxen-dev.
@Suite struct ShimTests {
    @Test func xsWireConstantsAreVisible() {
        #expect(XENSTORE_PAYLOAD_MAX == 4096)
        #expect(XENSTORE_ABS_PATH_MAX == 3072)
        #expect(XENSTORE_REL_PATH_MAX == 2048)
        #expect(XS_DIRECTORY_PART.rawValue == 22)
        #expect(MemoryLayout<xsd_sockmsg>.size == 16)
    }

    @Test func ringHelpersMatchBlkif() {
        #expect(cxen_blkif_ring_size(1) == 32)
        #expect(cxen_blkif_ring_size(2) == 64)
        #expect(MemoryLayout<xencons_interface>.size >= 3088)
    }
}
