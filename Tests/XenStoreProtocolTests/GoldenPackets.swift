import XenCore
import XenStoreProtocol

/// Golden wire bytes: the header words written out as little-endian hex, then the payload as text.
/// The first entries mirror ocaml-xenstore's `core_test/xs_test.ml` examples.
func golden(_ headerHex: String, _ payload: String) -> [UInt8] {
    let digits = headerHex.filter { !$0.isWhitespace }
    var bytes: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        bytes.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return bytes + Array(payload.utf8)
}

struct GoldenRequest: Sendable, CustomStringConvertible {
    var request: XenStoreRequest
    var transactionID: UInt32
    var requestID: UInt32
    var wire: [UInt8]
    var description: String { "\(request.type) \(request)" }
}

struct GoldenReply: Sendable, CustomStringConvertible {
    var reply: XenStoreReply
    var transactionID: UInt32
    var requestID: UInt32
    var wire: [UInt8]
    var description: String { "\(reply.type) \(reply)" }
}

let goldenRequests: [GoldenRequest] = [
    .init(
        request: .read(path: ""), transactionID: 0, requestID: 0,
        wire: golden("02000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .write(path: "", value: []), transactionID: 0, requestID: 0,
        wire: golden("0b000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .directory(path: ""), transactionID: 0, requestID: 0,
        wire: golden("01000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .mkdir(path: ""), transactionID: 0, requestID: 0,
        wire: golden("0c000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .getPermissions(path: ""), transactionID: 0, requestID: 0,
        wire: golden("03000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .write(path: "/test", value: Array("xxx\0yyy\0\0zzz".utf8)), transactionID: 0, requestID: 0,
        wire: golden("0b000000 00000000 00000000 12000000", "/test\0xxx\0yyy\0\0zzz")),
    .init(
        request: .read(path: "/test"), transactionID: 0, requestID: 0,
        wire: golden("02000000 00000000 00000000 06000000", "/test\0")),
    .init(
        request: .directory(path: "/whatever/whenever"), transactionID: 5, requestID: 0,
        wire: golden("01000000 00000000 05000000 13000000", "/whatever/whenever\0")),
    .init(
        request: .read(path: "/a/b/c"), transactionID: 6, requestID: 0,
        wire: golden("02000000 00000000 06000000 07000000", "/a/b/c\0")),
    .init(
        request: .getPermissions(path: "/a/b"), transactionID: 7, requestID: 0,
        wire: golden("03000000 00000000 07000000 05000000", "/a/b\0")),
    .init(
        request: .rm(path: "/"), transactionID: 0, requestID: 0,
        wire: golden("0d000000 00000000 00000000 02000000", "/\0")),
    .init(
        request: .setPermissions(
            path: "/",
            permissions: XenStorePermissions(owner: 5, others: .read, acl: [.init(.write, 2), .init(.both, 3)])),
        transactionID: 1, requestID: 0, wire: golden("0e000000 00000000 01000000 0b000000", "/\0r5\0w2\0b3\0")),
    .init(
        request: .write(path: "/key", value: Array("value".utf8)), transactionID: 1, requestID: 0,
        wire: golden("0b000000 00000000 01000000 0a000000", "/key\0value")),
    .init(
        request: .mkdir(path: "/"), transactionID: 1024, requestID: 0,
        wire: golden("0c000000 00000000 00040000 02000000", "/\0")),
    .init(
        request: .transactionStart, transactionID: 0, requestID: 0,
        wire: golden("06000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .transactionEnd(commit: true), transactionID: 1, requestID: 0,
        wire: golden("07000000 00000000 01000000 02000000", "T\0")),
    .init(
        request: .transactionEnd(commit: false), transactionID: 9, requestID: 3,
        wire: golden("07000000 03000000 09000000 02000000", "F\0")),
    .init(
        request: .introduce(domain: 4, gfn: 5, port: 1), transactionID: 0, requestID: 0,
        wire: golden("08000000 00000000 00000000 06000000", "4\u{0}5\u{0}1\0")),
    .init(
        request: .introduce(domain: 7, gfn: -1, port: 12), transactionID: 0, requestID: 1,
        wire: golden("08000000 01000000 00000000 08000000", "7\0-1\u{0}12\0")),
    .init(
        request: .release(domain: 2), transactionID: 0, requestID: 0,
        wire: golden("09000000 00000000 00000000 02000000", "2\0")),
    .init(
        request: .resume(domain: 3), transactionID: 0, requestID: 0,
        wire: golden("12000000 00000000 00000000 02000000", "3\0")),
    .init(
        request: .getDomainPath(domain: 3), transactionID: 0, requestID: 0,
        wire: golden("0a000000 00000000 00000000 02000000", "3\0")),
    .init(
        request: .isDomainIntroduced(domain: 65), transactionID: 0, requestID: 0x01020304,
        wire: golden("11000000 04030201 00000000 03000000", "65\0")),
    .init(
        request: .setTarget(domain: 3, target: 4), transactionID: 0, requestID: 0,
        wire: golden("13000000 00000000 00000000 04000000", "3\u{0}4\0")),
    .init(
        request: .watch(path: "/foo/bar", token: "something"), transactionID: 0, requestID: 0,
        wire: golden("04000000 00000000 00000000 13000000", "/foo/bar\0something\0")),
    .init(
        request: .unwatch(path: "/foo/bar", token: "somethinglse"), transactionID: 0, requestID: 0,
        wire: golden("05000000 00000000 00000000 16000000", "/foo/bar\0somethinglse\0")),
    .init(
        request: .control(arguments: ["a", "b", "something"]), transactionID: 0, requestID: 0,
        wire: golden("00000000 00000000 00000000 0e000000", "a\0b\0something\0")),
    .init(
        request: .resetWatches, transactionID: 0, requestID: 0,
        wire: golden("15000000 00000000 00000000 01000000", "\0")),
    .init(
        request: .directoryPart(path: "/local", offset: 12), transactionID: 2, requestID: 0,
        wire: golden("16000000 00000000 02000000 0a000000", "/local\u{0}12\0")),
]

let goldenReplies: [GoldenReply] = [
    .init(
        reply: .error(.einval), transactionID: 0, requestID: 0,
        wire: golden("10000000 00000000 00000000 07000000", "EINVAL\0")),
    .init(
        reply: .ok(.write), transactionID: 0, requestID: 0, wire: golden("0b000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .read(Array("xxx\0yyy\0\0zzz".utf8)), transactionID: 0, requestID: 0,
        wire: golden("02000000 00000000 00000000 0c000000", "xxx\0yyy\0\0zzz")),
    .init(
        reply: .read(Array("theresult".utf8)), transactionID: 6, requestID: 0,
        wire: golden("02000000 00000000 06000000 09000000", "theresult")),
    .init(reply: .read([]), transactionID: 6, requestID: 0, wire: golden("02000000 00000000 06000000 00000000", "")),
    .init(
        reply: .permissions(XenStorePermissions(owner: 2, others: .read, acl: [.init(.none, 4)])), transactionID: 7,
        requestID: 0, wire: golden("03000000 00000000 07000000 06000000", "r2\0n4\0")),
    .init(
        reply: .domainPath("/local/domain/4"), transactionID: 0, requestID: 0,
        wire: golden("0a000000 00000000 00000000 10000000", "/local/domain/4\0")),
    .init(
        reply: .transactionStarted(3), transactionID: 0, requestID: 0,
        wire: golden("06000000 00000000 00000000 02000000", "3\0")),
    .init(
        reply: .directory(["a", "b", "c", "aseasyas", "1", "2", "3"]), transactionID: 5, requestID: 0,
        wire: golden("01000000 00000000 05000000 15000000", "a\0b\0c\0aseasyas\u{0}1\u{0}2\u{0}3\0")),
    .init(
        reply: .directory([]), transactionID: 0, requestID: 0, wire: golden("01000000 00000000 00000000 00000000", "")),
    .init(
        reply: .ok(.write), transactionID: 1, requestID: 0, wire: golden("0b000000 00000000 01000000 03000000", "OK\0")),
    .init(
        reply: .ok(.mkdir), transactionID: 1024, requestID: 0,
        wire: golden("0c000000 00000000 00040000 03000000", "OK\0")),
    .init(reply: .ok(.rm), transactionID: 0, requestID: 0, wire: golden("0d000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .ok(.setPermissions), transactionID: 1, requestID: 0,
        wire: golden("0e000000 00000000 01000000 03000000", "OK\0")),
    .init(
        reply: .ok(.watch), transactionID: 0, requestID: 0, wire: golden("04000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .ok(.unwatch), transactionID: 0, requestID: 0,
        wire: golden("05000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .ok(.transactionEnd), transactionID: 1, requestID: 0,
        wire: golden("07000000 00000000 01000000 03000000", "OK\0")),
    .init(
        reply: .ok(.introduce), transactionID: 0, requestID: 0,
        wire: golden("08000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .ok(.release), transactionID: 0, requestID: 0,
        wire: golden("09000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .ok(.resume), transactionID: 0, requestID: 0, wire: golden("12000000 00000000 00000000 03000000", "OK\0")
    ),
    .init(
        reply: .ok(.setTarget), transactionID: 0, requestID: 0,
        wire: golden("13000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .ok(.resetWatches), transactionID: 0, requestID: 0,
        wire: golden("15000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .isDomainIntroduced(true), transactionID: 0, requestID: 9,
        wire: golden("11000000 09000000 00000000 02000000", "T\0")),
    .init(
        reply: .isDomainIntroduced(false), transactionID: 0, requestID: 9,
        wire: golden("11000000 09000000 00000000 02000000", "F\0")),
    .init(
        reply: .control(Array("OK\0".utf8)), transactionID: 0, requestID: 0,
        wire: golden("00000000 00000000 00000000 03000000", "OK\0")),
    .init(
        reply: .error(XenStoreErrorName(rawValue: "whatyoutalkingabout")), transactionID: 2, requestID: 0x10,
        wire: golden("10000000 10000000 02000000 14000000", "whatyoutalkingabout\0")),
    .init(
        reply: .error(.equota), transactionID: 0, requestID: 1,
        wire: golden("10000000 01000000 00000000 07000000", "EQUOTA\0")),
    .init(
        reply: .watchEvent(path: "/foo/bar", token: "something"), transactionID: 0, requestID: 0,
        wire: golden("0f000000 00000000 00000000 13000000", "/foo/bar\0something\0")),
    .init(
        reply: .directoryPart(generation: "17", children: ["a", "bc"], complete: false), transactionID: 0, requestID: 0,
        wire: golden("16000000 00000000 00000000 08000000", "17\0a\0bc\0")),
    .init(
        reply: .directoryPart(generation: "17", children: ["d"], complete: true), transactionID: 0, requestID: 0,
        wire: golden("16000000 00000000 00000000 06000000", "17\0d\0\0")),
    .init(
        reply: .directoryPart(generation: "5", children: [], complete: true), transactionID: 0, requestID: 0,
        wire: golden("16000000 00000000 00000000 03000000", "5\0\0")),
]
