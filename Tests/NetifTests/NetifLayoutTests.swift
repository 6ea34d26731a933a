import CXen
import NetifProtocol
import SharedRing
import Testing
import XenCore

/// The netif codecs against netif.h: sizes, offsets and constants through CXen, golden bytes, and C structs
/// reading what Swift wrote (and Swift reading what C wrote).
@Suite struct NetifLayoutTests {
    @Test func sizesAndOffsetsMatchNetifH() throws {
        #expect(MemoryLayout<netif_tx_request>.size == Netif.txRequestSize)
        #expect(MemoryLayout<netif_tx_response>.size == Netif.txResponseSize)
        #expect(MemoryLayout<netif_rx_request>.size == Netif.rxRequestSize)
        #expect(MemoryLayout<netif_rx_response>.size == Netif.rxResponseSize)
        #expect(MemoryLayout<netif_extra_info>.size == Netif.extraInfoSize)
        #expect(cxen_netif_tx_entry_size() == Netif.txEntrySize)
        #expect(cxen_netif_rx_entry_size() == Netif.rxEntrySize)
        #expect(cxen_netif_tx_request_offset_offset() == 4)
        #expect(cxen_netif_tx_request_flags_offset() == 6)
        #expect(cxen_netif_tx_request_id_offset() == 8)
        #expect(cxen_netif_tx_request_size_offset() == 10)
        #expect(cxen_netif_tx_response_status_offset() == 2)
        #expect(cxen_netif_rx_request_gref_offset() == 4)
        #expect(cxen_netif_rx_response_offset_offset() == 2)
        #expect(cxen_netif_rx_response_flags_offset() == 4)
        #expect(cxen_netif_rx_response_status_offset() == 6)
        #expect(cxen_netif_extra_gso_size_offset() == 2)
        #expect(cxen_netif_extra_gso_type_offset() == 4)
        #expect(cxen_netif_extra_gso_features_offset() == 6)
        #expect(cxen_netif_extra_mcast_addr_offset() == 2)
        #expect(cxen_netif_extra_hash_value_offset() == 4)
        #expect(cxen_netif_tx_sring_ring_offset() == SharedRingGeometry.headerSize)
        // Ring sizes: the shared ring's geometry gives what __RING_SIZE gives, for 1, 2 and 4 pages.
        for pages in [1, 2, 4] {
            let tx = try SharedRingGeometry(entrySize: Netif.txEntrySize, pages: pages)
            let rx = try SharedRingGeometry(entrySize: Netif.rxEntrySize, pages: pages)
            #expect(tx.size == cxen_netif_tx_ring_size(UInt32(pages)))
            #expect(rx.size == cxen_netif_rx_ring_size(UInt32(pages)))
        }
        #expect(cxen_netif_tx_ring_size(1) == 256 && cxen_netif_rx_ring_size(1) == 256)
    }

    @Test func constantsMatchNetifH() {
        #expect(NetifTxFlags.checksumBlank.rawValue == NETTXF_csum_blank)
        #expect(NetifTxFlags.dataValidated.rawValue == NETTXF_data_validated)
        #expect(NetifTxFlags.moreData.rawValue == NETTXF_more_data)
        #expect(NetifTxFlags.extraInfo.rawValue == NETTXF_extra_info)
        #expect(NetifRxFlags.dataValidated.rawValue == NETRXF_data_validated)
        #expect(NetifRxFlags.checksumBlank.rawValue == NETRXF_csum_blank)
        #expect(NetifRxFlags.moreData.rawValue == NETRXF_more_data)
        #expect(NetifRxFlags.extraInfo.rawValue == NETRXF_extra_info)
        #expect(NetifRxFlags.gsoPrefix.rawValue == NETRXF_gso_prefix)
        #expect(NetifExtraInfo.typeGSO == XEN_NETIF_EXTRA_TYPE_GSO)
        #expect(NetifExtraInfo.typeMulticastAdd == XEN_NETIF_EXTRA_TYPE_MCAST_ADD)
        #expect(NetifExtraInfo.typeMulticastDelete == XEN_NETIF_EXTRA_TYPE_MCAST_DEL)
        #expect(NetifExtraInfo.typeHash == XEN_NETIF_EXTRA_TYPE_HASH)
        #expect(NetifExtraInfo.flagMore == XEN_NETIF_EXTRA_FLAG_MORE)
        #expect(NetifGSOType.tcpv4.rawValue == XEN_NETIF_GSO_TYPE_TCPV4)
        #expect(NetifGSOType.tcpv6.rawValue == XEN_NETIF_GSO_TYPE_TCPV6)
        #expect(NetifStatus.dropped.rawValue == NETIF_RSP_DROPPED)
        #expect(NetifStatus.error.rawValue == NETIF_RSP_ERROR)
        #expect(NetifStatus.okay.rawValue == NETIF_RSP_OKAY)
        #expect(NetifStatus.null.rawValue == NETIF_RSP_NULL)
        #expect(Netif.maxFrameSize == XEN_NETIF_MAX_TX_SIZE)
        #expect(Netif.minimumSlotsPerPacket == XEN_NETIF_NR_SLOTS_MIN)
    }

    @Test func txRequestGoldenBytesAndCView() {
        let request = NetifTxRequest(
            grant: 0x0102_0304, offset: 0x0506, flags: [.checksumBlank, .moreData], id: 0x0708, size: 0x090A)
        let slot = PageBuffer(pages: 1).slice(from: 64, count: Netif.txEntrySize)
        slot.fill(0xAA)
        request.encode(into: slot)
        #expect(slot.bytes == [4, 3, 2, 1, 6, 5, 5, 0, 8, 7, 0x0A, 9])
        let c = slot.pointer.load(as: netif_tx_request.self)
        #expect(c.gref == 0x0102_0304 && c.offset == 0x0506 && c.flags == 5 && c.id == 0x0708 && c.size == 0x090A)
        #expect(NetifTxRequest.decode(from: slot) == request)
    }

    @Test func txResponseGoldenBytesAndCView() throws {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: Netif.txEntrySize)
        NetifTxResponse(id: 0x1234, status: .dropped).encode(into: slot)
        #expect(Array(slot.bytes[0..<4]) == [0x34, 0x12, 0xFE, 0xFF])
        let c = slot.pointer.load(as: netif_tx_response.self)
        #expect(c.id == 0x1234 && c.status == -2)
        #expect(try NetifTxResponse.decode(from: slot) == NetifTxResponse(id: 0x1234, status: .dropped))
        slot.setUInt16(7, at: 2)
        #expect(throws: NetifProtocolError.unknownStatus(7, id: 0x1234)) { try NetifTxResponse.decode(from: slot) }
    }

    @Test func rxRequestAndResponseGoldenBytesAndCView() {
        let slot = PageBuffer(pages: 1).slice(from: 8, count: Netif.rxEntrySize)
        slot.fill(0xAA)
        NetifRxRequest(id: 0x0102, grant: 0x0A0B_0C0D).encode(into: slot)
        #expect(slot.bytes == [2, 1, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A])
        let request = slot.pointer.load(as: netif_rx_request.self)
        #expect(request.id == 0x0102 && request.gref == 0x0A0B_0C0D)
        #expect(NetifRxRequest.decode(from: slot) == NetifRxRequest(id: 0x0102, grant: 0x0A0B_0C0D))

        let response = NetifRxResponse(id: 3, offset: 0x10, flags: [.dataValidated, .moreData], status: 1514)
        response.encode(into: slot)
        #expect(slot.bytes == [3, 0, 0x10, 0, 5, 0, 0xEA, 0x05])
        let c = slot.pointer.load(as: netif_rx_response.self)
        #expect(c.id == 3 && c.offset == 0x10 && c.flags == 5 && c.status == 1514)
        #expect(NetifRxResponse.decode(from: slot) == response)
        // C writes, Swift reads: an error status.
        var error = netif_rx_response(id: 9, offset: 0, flags: 0, status: Int16(NETIF_RSP_ERROR))
        withUnsafeBytes(of: &error) { slot.copy(from: $0) }
        #expect(NetifRxResponse.decode(from: slot).status == -1)
    }

    @Test func extraInfoGoldenBytesAndCView() throws {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: Netif.txEntrySize)
        slot.fill(0xAA)
        let gso = NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0), more: true)
        gso.encode(into: slot)
        #expect(slot.bytes == [1, 1, 0xA8, 0x05, 1, 0, 0, 0, 0, 0, 0, 0])
        let c = slot.pointer.load(as: netif_extra_info.self)
        #expect(c.type == 1 && c.flags == 1 && c.u.gso.size == 1448 && c.u.gso.type == 1 && c.u.gso.features == 0)
        #expect(try NetifExtraInfo.decode(from: slot) == gso)

        let address = try #require(MACAddress("01:00:5e:00:00:fb"))
        let add = NetifExtraInfo(.multicastAdd(address))
        add.encode(into: slot)
        #expect(Array(slot.bytes[0..<8]) == [2, 0, 1, 0, 0x5E, 0, 0, 0xFB])
        let mcast = slot.pointer.load(as: netif_extra_info.self)
        #expect(mcast.u.mcast.addr.0 == 1 && mcast.u.mcast.addr.5 == 0xFB)
        #expect(try NetifExtraInfo.decode(from: slot) == add)

        let hash = NetifExtraInfo(.hash(hashType: 1, algorithm: 1, value: 0xDEAD_BEEF))
        hash.encode(into: slot)
        #expect(Array(slot.bytes[0..<8]) == [4, 0, 1, 1, 0xEF, 0xBE, 0xAD, 0xDE])
        #expect(try NetifExtraInfo.decode(from: slot) == hash)
        #expect(
            try NetifExtraInfo.decode(from: slot.slice(from: 0, count: Netif.rxEntrySize)) == hash,
            "an rx slot holds the same 8 bytes")

        for bad: UInt8 in [0, 5, 200] {
            slot.setUInt8(bad, at: 0)
            #expect(throws: NetifProtocolError.badExtraType(bad)) { try NetifExtraInfo.decode(from: slot) }
        }
        gso.encode(into: slot)
        slot.setUInt8(3, at: 4)
        #expect(throws: NetifProtocolError.badGSOType(3)) { try NetifExtraInfo.decode(from: slot) }
    }

    @Test func macAddressesParseAndPrint() throws {
        let mac = try #require(MACAddress("00:16:3E:0a:0b:0c"))
        #expect(mac.description == "00:16:3e:0a:0b:0c")
        #expect(mac.bytes == [0, 0x16, 0x3E, 0x0A, 0x0B, 0x0C])
        #expect(!mac.isMulticast && !mac.isLocallyAdministered)
        #expect(MACAddress("00-16-3e-0a-0b-0c") == mac)
        for bad in ["", "00:16:3e:0a:0b", "00:16:3e:0a:0b:0c:0d", "0:16:3e:0a:0b:0c", "zz:16:3e:0a:0b:0c"] {
            #expect(MACAddress(bad) == nil, "\(bad)")
        }
        #expect(MACAddress.broadcast.isMulticast)
        let local = MACAddress.local(seed: 0xFFFF_FFFF_FFFF)
        #expect(local.isLocallyAdministered && !local.isMulticast)
        #expect(Netif.defaultBackendMAC.description == "fe:ff:ff:ff:ff:ff")
    }
}
