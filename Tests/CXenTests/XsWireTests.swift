import CXen
import Testing
import XenStoreProtocol

/// Every xs_wire.h constant SwiftXen uses, compared with the C header through `import CXen`.
@Suite struct XsWireTests {
    @Test func messageTypesEqualXsWire() {
        let pairs: [(XenStoreMessageType, xsd_sockmsg_type)] = [
            (.control, XS_CONTROL), (.directory, XS_DIRECTORY), (.read, XS_READ), (.getPermissions, XS_GET_PERMS),
            (.watch, XS_WATCH), (.unwatch, XS_UNWATCH), (.transactionStart, XS_TRANSACTION_START),
            (.transactionEnd, XS_TRANSACTION_END), (.introduce, XS_INTRODUCE), (.release, XS_RELEASE),
            (.getDomainPath, XS_GET_DOMAIN_PATH), (.write, XS_WRITE), (.mkdir, XS_MKDIR), (.rm, XS_RM),
            (.setPermissions, XS_SET_PERMS), (.watchEvent, XS_WATCH_EVENT), (.error, XS_ERROR),
            (.isDomainIntroduced, XS_IS_DOMAIN_INTRODUCED), (.resume, XS_RESUME), (.setTarget, XS_SET_TARGET),
            (.resetWatches, XS_RESET_WATCHES), (.directoryPart, XS_DIRECTORY_PART), (.invalid, XS_INVALID),
        ]
        for (swift, c) in pairs { #expect(swift.rawValue == c.rawValue, "\(swift)") }
        #expect(Set(pairs.map(\.0)) == Set(XenStoreMessageType.allKnown))
        // Every valid C type below XS_TYPE_COUNT (except the removed XS_RESTRICT, 20) has a Swift name.
        #expect(XS_TYPE_COUNT.rawValue == 23)
        for raw in 0..<XS_TYPE_COUNT.rawValue where raw != 20 {
            #expect(XenStoreMessageType.allKnown.contains(XenStoreMessageType(rawValue: raw)))
        }
    }

    @Test func limitsEqualXsWire() {
        #expect(XenStoreLimits.payloadMax == Int(XENSTORE_PAYLOAD_MAX))
        #expect(XenStoreLimits.absolutePathMax == Int(XENSTORE_ABS_PATH_MAX))
        #expect(XenStoreLimits.relativePathMax == Int(XENSTORE_REL_PATH_MAX))
        #expect(XenStoreHeader.size == MemoryLayout<xsd_sockmsg>.size)
    }

    @Test func errorNamesEqualXsdErrors() {
        let table = withUnsafeBytes(of: xsd_errors) { raw in
            Array(raw.bindMemory(to: xsd_errors.self))
        }
        #expect(table.map { String(cString: $0.errstring) } == XenStoreErrorName.wireOrder.map(\.rawValue))
    }

    @Test func headerLayoutMatchesXsdSockmsg() {
        var message = xsd_sockmsg(type: XS_WRITE.rawValue, req_id: 0x0102_0304, tx_id: 7, len: 10)
        let cBytes = withUnsafeBytes(of: &message) { Array($0) }
        var swiftBytes: [UInt8] = []
        XenStoreHeader(type: .write, requestID: 0x0102_0304, transactionID: 7, length: 10).encode(into: &swiftBytes)
        #expect(cBytes == swiftBytes)
    }
}
