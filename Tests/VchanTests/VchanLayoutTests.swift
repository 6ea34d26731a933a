import CXen
import GrantTable
import Testing
import Vchan
import XenCore

/// The shared page against libxenvchan.h, byte for byte.
@Suite struct VchanLayoutTests {
    @Test func offsetsMatchTheCHeader() {
        #expect(VchanLayout.leftConsumerOffset == cxen_vchan_left_offset() + cxen_vchan_ring_cons_offset())
        #expect(VchanLayout.leftProducerOffset == cxen_vchan_left_offset() + cxen_vchan_ring_prod_offset())
        #expect(VchanLayout.rightConsumerOffset == cxen_vchan_right_offset() + cxen_vchan_ring_cons_offset())
        #expect(VchanLayout.rightProducerOffset == cxen_vchan_right_offset() + cxen_vchan_ring_prod_offset())
        #expect(VchanLayout.leftOrderOffset == cxen_vchan_left_order_offset())
        #expect(VchanLayout.rightOrderOffset == cxen_vchan_right_order_offset())
        #expect(VchanLayout.clientLiveOffset == cxen_vchan_cli_live_offset())
        #expect(VchanLayout.serverLiveOffset == cxen_vchan_srv_live_offset())
        #expect(VchanLayout.clientNotifyOffset == cxen_vchan_cli_notify_offset())
        #expect(VchanLayout.serverNotifyOffset == cxen_vchan_srv_notify_offset())
        #expect(VchanLayout.grantsOffset == cxen_vchan_grants_offset())
        #expect(VchanLayout.headerSize == cxen_vchan_interface_size())
        #expect(VchanLayout.notifyWrite == UInt8(VCHAN_NOTIFY_WRITE))
        #expect(VchanLayout.notifyRead == UInt8(VCHAN_NOTIFY_READ))
    }

    /// A fresh server page with both rings in the page (what `vchan-socket-proxy` offers).
    @Test func goldenServerPageInPage() throws {
        let page = PageBuffer(pages: 1)
        page.fill(0xEE)
        let sizes = try VchanRingSizes.server(readMinimum: 0, writeMinimum: 0)
        VchanControlPage.initialiseServerPage(page, sizes: sizes, grants: [])
        let golden: [UInt8] = [
            0, 0, 0, 0, 0, 0, 0, 0,  // left: cons, prod
            0, 0, 0, 0, 0, 0, 0, 0,  // right: cons, prod
            10, 0, 11, 0,  // left_order 10 (1024 at 1024), right_order 11 (2048 at 2048)
            2, 1,  // cli_live waiting, srv_live connected
            1, 0,  // cli_notify VCHAN_NOTIFY_WRITE, srv_notify 0
        ]
        #expect(page.slice(from: 0, count: 24).bytes == golden)
        #expect(page.bytes.dropFirst(24).allSatisfy { $0 == 0 }, "init_gnt_srv zeroes the whole page")
    }

    /// A fresh server page with two external rings: the grant list, left ring's pages first.
    @Test func goldenServerPageExternal() throws {
        let page = PageBuffer(pages: 1)
        let sizes = try VchanRingSizes.server(readMinimum: 8192, writeMinimum: 4096)
        #expect(sizes.leftOrder == 13 && sizes.rightOrder == 12 && sizes.grantCount == 3)
        VchanControlPage.initialiseServerPage(page, sizes: sizes, grants: [0x11, 0x2233, 0x4455_6677])
        let golden: [UInt8] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            13, 0, 12, 0, 2, 1, 1, 0,
            0x11, 0, 0, 0, 0x33, 0x22, 0, 0, 0x77, 0x66, 0x55, 0x44,
        ]
        #expect(page.slice(from: 0, count: golden.count).bytes == golden)
        let control = VchanControlPage(page: page, role: .client)
        let read = try control.ringSizes()
        #expect(read == sizes)
        let grants = control.grants(for: read)
        #expect(grants.left == [0x11, 0x2233] && grants.right == [0x4455_6677])
    }

    /// libxenvchan_server_init's choice, case by case (min_order from 12; in-page rings when they fit).
    @Test(arguments: [
        (0, 0, 10, 11), (1024, 2048, 10, 11), (2048, 1024, 11, 10), (1024, 1024, 10, 11),
        (2048, 2048, 11, 12), (2048, 4096, 11, 12), (4096, 2048, 12, 11), (1025, 3000, 11, 12),
        (4096, 4096, 12, 12), (4097, 100, 13, 11), (65536, 1 << 20, 16, 20), (1 << 20, 1 << 20, 20, 20),
        (3000, 5000, 12, 13),
    ])
    func serverRingChoice(read: Int, write: Int, left: Int, right: Int) throws {
        let sizes = try VchanRingSizes.server(readMinimum: read, writeMinimum: write)
        #expect(sizes.leftOrder == left && sizes.rightOrder == right, "\(read)/\(write) → \(sizes)")
        #expect(sizes.leftSize >= read && sizes.rightSize >= write)
    }

    @Test func serverRefusesRingsAboveOneMebibyte() {
        #expect(throws: VchanError.ringTooLarge(requested: (1 << 20) + 1, maximum: 1 << 20)) {
            try VchanRingSizes.server(readMinimum: (1 << 20) + 1, writeMinimum: 0)
        }
        #expect(throws: VchanError.ringTooLarge(requested: -1, maximum: 1 << 20)) {
            try VchanRingSizes.server(readMinimum: 0, writeMinimum: -1)
        }
    }

    /// What a client accepts from the page: init_gnt_cli's checks.
    @Test(arguments: [(9, 11), (10, 21), (10, 10), (11, 11), (0, 0), (65535, 12), (21, 21)])
    func clientRejectsOrders(left: Int, right: Int) {
        #expect(throws: VchanError.invalidRingOrders(left: left, right: right)) {
            try VchanRingSizes(leftOrder: left, rightOrder: right)
        }
    }

    @Test(arguments: [(10, 11), (11, 10), (12, 12), (20, 20), (10, 20), (11, 12)])
    func clientAcceptsOrders(left: Int, right: Int) throws {
        let sizes = try VchanRingSizes(leftOrder: left, rightOrder: right)
        #expect(sizes.leftSize == 1 << left && sizes.rightSize == 1 << right)
    }

    @Test func locations() {
        #expect(VchanRingLocation(order: 10) == .inPage(offset: 1024))
        #expect(VchanRingLocation(order: 11) == .inPage(offset: 2048))
        #expect(VchanRingLocation(order: 12) == .external(pages: 1))
        #expect(VchanRingLocation(order: 20) == .external(pages: 256))
        #expect(VchanRingLocation(order: 9) == nil && VchanRingLocation(order: 21) == nil)
    }

    @Test func ports() throws {
        #expect(VchanPort(rawValue: "qubes_rpc-0") != nil)
        for bad in ["", "a/b", "a b", "é", "a.b", "x\0"] {
            #expect(VchanPort(rawValue: bad) == nil, "\(bad.debugDescription)")
            #expect(throws: VchanError.invalidPort(bad)) { try VchanPort(bad) }
        }
    }
}
