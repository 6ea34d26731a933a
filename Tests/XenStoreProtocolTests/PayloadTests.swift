import Testing
import XenCore
import XenStoreProtocol

@Suite struct MalformedRequestTests {
    static let cases: [(XenStoreMessageType, String)] = [
        (.read, "/a"),  // no NUL
        (.read, "/a\0extra\0"),  // two strings where xenstored wants one
        (.read, ""),
        (.write, "/a"),  // no NUL after the path
        (.transactionEnd, "X\0"),
        (.transactionEnd, "T"),
        (.setPermissions, "/a\0"),  // no permission
        (.setPermissions, "/a\0x0\0"),  // bad letter
        (.setPermissions, "/a\0r70000\0"),  // domid out of range
        (.watch, "/a\0"),  // no token
        (.unwatch, ""),
        (.introduce, "1\u{0}2\0"),
        (.release, "70000\0"),
        (.getDomainPath, "-1\0"),
        (.setTarget, "1\0"),
        (.directoryPart, "/a\0"),
        (.control, ""),
    ]

    @Test(arguments: 0..<cases.count)
    func rejected(_ index: Int) {
        let (type, payload) = Self.cases[index]
        #expect(throws: XenStoreProtocolError.self) {
            try XenStoreRequest(decoding: XenStorePacket(type: type, payload: Array(payload.utf8)))
        }
    }

    @Test func serverOnlyTypesAreUnsupported() {
        for type in [XenStoreMessageType.watchEvent, .error, XenStoreMessageType(rawValue: 20), .invalid] {
            #expect(throws: XenStoreProtocolError.unsupportedMessageType(type)) {
                try XenStoreRequest(decoding: XenStorePacket(type: type, payload: [0]))
            }
        }
    }

    @Test func domainIdsAreReadLikeAtoi() throws {
        // ocaml-xenstore's "unexpected" example: a lone NUL means domain 0.
        let lone = XenStorePacket(type: .getDomainPath, payload: [0])
        #expect(try XenStoreRequest(decoding: lone) == .getDomainPath(domain: 0))
        let trailing = XenStorePacket(type: .release, payload: Array("12abc\0".utf8))
        #expect(try XenStoreRequest(decoding: trailing) == .release(domain: 12))
    }

    @Test func stringsSplitAtEveryNul() throws {
        // One string (the fast path), an empty one, and several with empty parts between NULs.
        #expect(
            try XenStoreRequest(decoding: XenStorePacket(type: .read, payload: Array("/a/b\0".utf8)))
                == .read(path: "/a/b"))
        #expect(try XenStoreRequest(decoding: XenStorePacket(type: .read, payload: [0])) == .read(path: ""))
        let watch = XenStorePacket(type: .watch, payload: Array("/a\0\0".utf8))
        #expect(try XenStoreRequest(decoding: watch) == .watch(path: "/a", token: ""))
        let unwatch = XenStorePacket(type: .unwatch, payload: Array("\0tok\0".utf8))
        #expect(try XenStoreRequest(decoding: unwatch) == .unwatch(path: "", token: "tok"))
    }

    @Test func watchIgnoresAnExtraDepthArgument() throws {
        let packet = XenStorePacket(type: .watch, payload: Array("/a\0tok\u{0}1\0".utf8))
        #expect(try XenStoreRequest(decoding: packet) == .watch(path: "/a", token: "tok"))
    }
}

@Suite struct MalformedReplyTests {
    @Test func badReplies() {
        let cases: [(XenStoreMessageType, String)] = [
            (.transactionStart, "x\0"), (.isDomainIntroduced, "Y\0"), (.write, "NO\0"), (.getPermissions, "q1\0"),
            (.getPermissions, ""), (.watchEvent, "/a"), (.directoryPart, "12"),
        ]
        for (type, payload) in cases {
            #expect(throws: XenStoreProtocolError.self) {
                try XenStoreReply(decoding: XenStorePacket(type: type, payload: Array(payload.utf8)))
            }
        }
    }

    @Test func unknownErrorNamesAreKept() throws {
        let packet = XenStorePacket(type: .error, payload: Array("EWHATEVER\0".utf8))
        #expect(try XenStoreReply(decoding: packet) == .error(XenStoreErrorName(rawValue: "EWHATEVER")))
        #expect(XenStoreErrorName.wireOrder.count == 16)
    }
}

@Suite struct PermissionTests {
    @Test func ownerFirstAndDefaults() {
        let perms = XenStorePermissions(owner: 5, others: .read, acl: [.init(.write, 2), .init(.both, 3)])
        #expect(perms.strings == ["r5", "w2", "b3"])
        #expect(perms.access(for: 5) == .both)
        #expect(perms.access(for: 2) == .write)
        #expect(perms.access(for: 3) == .both)
        #expect(perms.access(for: 9) == .read)
        #expect(XenStorePermissions(strings: perms.strings) == perms)
    }

    @Test func parsesLikeStrtolBase0() {
        #expect(XenStorePermission("b0x10") == XenStorePermission(.both, 16))
        #expect(XenStorePermission("r010") == XenStorePermission(.read, 8))
        #expect(XenStorePermission("n0") == XenStorePermission(.none, 0))
        #expect(XenStorePermission("x1") == nil)
        #expect(XenStorePermission("r") == nil)
        #expect(XenStorePermission("r-1") == nil)
        #expect(XenStorePermission("r65536") == nil)
        #expect(XenStorePermissions(strings: [String]()) == nil)
    }

    @Test func accessLetters() {
        #expect(XenStoreAccess.allCases.map(\.letter) == ["n", "r", "w", "b"])
        #expect(XenStoreAccess.both.canRead && XenStoreAccess.both.canWrite)
        #expect(!XenStoreAccess.write.canRead && !XenStoreAccess.read.canWrite)
    }
}

@Suite struct PathTests {
    @Test func validAbsolutePaths() throws {
        for path in ["/", "/a", "/a/b-c_d@e/F9", "/local/domain/0/x"] {
            #expect(try XenStorePath.canonicalize(path, for: 0) == path)
        }
    }

    @Test func relativePathsGoBelowTheDomainHome() throws {
        #expect(try XenStorePath.canonicalize("device/vbd", for: 7) == "/local/domain/7/device/vbd")
        #expect(try XenStorePath.canonicalize("x", for: 0) == "/local/domain/0/x")
    }

    @Test func invalidPaths() {
        let bad = ["", "/a/", "//", "/a//b", "/a b", "/a\u{e9}", "/a.b", "a/", "@introduceDomain", "/a\0b"]
        for path in bad {
            #expect(throws: XenStoreProtocolError.self, "\(path)") { try XenStorePath.canonicalize(path, for: 0) }
        }
    }

    @Test func specialPathsOnlyForWatches() throws {
        #expect(try XenStorePath.canonicalize("@releaseDomain", for: 3, allowSpecial: true) == "@releaseDomain")
        #expect(throws: XenStoreProtocolError.self) {
            try XenStorePath.canonicalize("@a b", for: 3, allowSpecial: true)
        }
    }

    @Test func lengthLimits() throws {
        let longest = "/" + String(repeating: "a", count: 3071)
        #expect(try XenStorePath.canonicalize(longest, for: 0) == longest)
        #expect(throws: XenStoreProtocolError.self) { try XenStorePath.canonicalize(longest + "a", for: 0) }
        let relative = String(repeating: "r", count: 2048)
        #expect(try XenStorePath.canonicalize(relative, for: 1) == "/local/domain/1/" + relative)
        #expect(throws: XenStoreProtocolError.self) { try XenStorePath.canonicalize(relative + "r", for: 1) }
        let home = "/local/domain/12345/"
        #expect(throws: XenStoreProtocolError.self) {
            try XenStorePath.canonicalize(home + String(repeating: "h", count: 2049), for: 0)
        }
    }

    @Test func treeHelpers() {
        #expect(XenStorePath.parent(of: "/a/b") == "/a")
        #expect(XenStorePath.parent(of: "/a") == "/")
        #expect(XenStorePath.parent(of: "/") == nil)
        #expect(XenStorePath.basename(of: "/a/b") == "b")
        #expect(XenStorePath.join("/", "a") == "/a")
        #expect(XenStorePath.isAtOrBelow("/a/b", "/a"))
        #expect(!XenStorePath.isAtOrBelow("/ab", "/a"))
        #expect(XenStorePath.isAtOrBelow("/ab", "/"))
    }
}
