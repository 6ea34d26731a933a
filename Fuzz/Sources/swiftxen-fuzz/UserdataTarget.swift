import DomainUserdata
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// libxl's userdata directory as anyone with write access to /var/lib/xen may have left it: the file-name
/// parser on any name (it must give back exactly the name it parsed, and agree with libxl's destroy glob),
/// then a directory of entries with hostile names and contents (empty files, directories and symlinks where
/// data files should be) through `retrieve`, `store` and the collector's sweep. Domains 1 and 2 are alive;
/// only entries of dead domains may go, never a live domain's and never a name that is not userdata.
///
/// Input: a name to parse (length-prefixed), then up to four entries (kind, name, contents).
enum UserdataTarget {
    static let alive: [DomainID: DomainUUID] = [
        1: DomainUUID("11111111-2222-3333-4444-555555555555")!, 2: DomainUUID("66666666-7777-8888-9999-aaaaaaaaaaaa")!,
    ]
    static let dead = DomainUUID("deadbeef-0000-1111-2222-333333333333")!

    /// A private directory on tmpfs (userdata fsyncs its directory on every change).
    nonisolated(unsafe) static var root: String = {
        var template = Array((access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp").utf8CString.dropLast())
        template += Array("/swiftxen-fuzz-userdata-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }()

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        parse(input.blob())
        directory(&input)
    }

    static func parse(_ bytes: [UInt8]) {
        let name = String(decoding: bytes, as: UTF8.self)
        if let parsed = UserdataFileName(parsing: name) {
            require(parsed.description == name, "parsed \(parsed) from \(name)")
            let isLock = containsLockName(name)
            require(
                UserdataFileName.matchesDestroyPattern(Array(name.utf8), domid: parsed.domid, uuid: parsed.uuid)
                    == !isLock,
                "\(name): parser and destroy glob disagree")
        }
        if let userid = try? UserdataID(validating: name) {
            require(!name.utf8.contains(UInt8(ascii: "/")) && !name.isEmpty, "userid \(name) accepted")
            _ = userid.isReserved
        }
        if let uuid = DomainUUID(name) { require(DomainUUID(uuid.description) == uuid, "uuid \(name)") }
    }

    enum Entry { case file([UInt8]), directory, symlink(String) }

    static func directory(_ input: inout FuzzInput) {
        clear()
        var made: [String: Entry] = [:]
        for _ in 0..<input.int(in: 0...4) {
            let kind = input.byte()
            var name: String
            if kind & 0x80 != 0 {
                let domid = DomainID(UInt16(input.byte() % 4))
                let uuid = [alive[1]!, alive[2]!, dead][Int(input.byte() % 3)]
                let fileKind = [UserdataFileKind.data, .new, .lock][Int(input.byte() % 3)]
                let userid = String(decoding: input.blob().map { $0 == 0x2F || $0 == 0 ? 0x5F : $0 }, as: UTF8.self)
                name =
                    UserdataFileName(kind: fileKind, domid: domid, uuid: uuid, userid: userid.isEmpty ? "xl" : userid)
                    .description
            } else {
                name = String(decoding: input.blob().map { $0 == 0x2F || $0 == 0 ? 0x5F : $0 }, as: UTF8.self)
            }
            guard !name.isEmpty, name != ".", name != "..", name.utf8.count < 250, made[name] == nil else { continue }
            let path = root + "/" + name
            switch kind % 3 {
            case 0:
                let contents = input.blob()
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                guard fd >= 0 else { continue }
                _ = contents.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
                made[name] = .file(contents)
            case 1:
                guard mkdir(path, 0o700) == 0 else { continue }
                made[name] = .directory
            default:
                let target = input.bool() ? "/nonexistent/swiftxen-fuzz" : root + "/userdata-d.1.\(alive[1]!).xl"
                guard symlink(target, path) == 0 else { continue }
                made[name] = .symlink(target)
            }
        }
        let store = UserdataStore(root: root, domains: InMemoryDomainDirectory(alive))
        let xl = UserdataFileName(kind: .data, domid: 1, uuid: alive[1]!, userid: "xl").description
        switch (made[xl], Result { () throws(UserdataError) in try store.retrieve(domid: 1, userid: .xl) }) {
        case (.file(let contents)?, .success(let value)): require(value == contents, "retrieve returned other bytes")
        case (.file(let contents)?, .failure(let error)):
            require(contents.isEmpty && error == .emptyFile(path: root + "/" + xl), "retrieve failed: \(error)")
        case (nil, .success(let value)): require(value == nil, "retrieve invented a value")
        default: break
        }
        let fz = try! UserdataID(validating: "swiftxen-fuzz")
        let value = Array("value".utf8)
        if (try? store.store(domid: 2, userid: fz, data: value)) != nil {
            require((try? store.retrieve(domid: 2, userid: fz)) == value, "stored value not read back")
        }
        let collected = (try? UserdataCollector(store: store).sweep()) ?? []
        // A dead domain whose lock cannot be taken keeps its files (reported, not thrown: the sweep goes on),
        // only when something hostile sits at its lock path.
        var failed = Set<String>()
        for result in collected where result.failure != nil {
            let lock = UserdataFileName.lock(domid: result.domid, uuid: result.uuid).description
            switch made[lock] {
            case .directory?, .symlink?: failed.insert("\(result.domid).\(result.uuid)")
            default: require(false, "sweep of domain \(result.domid) failed: \(String(describing: result.failure))")
            }
        }
        let left = Set(((try? listing()) ?? []))
        // retrieve (domain 1) and store (domain 2) take and release their domain's lock, and releasing it
        // unlinks the lock path, as libxl's `libxl__unlock_file` does: a file (or symlink) left there goes.
        let liveLocks = Set(alive.map { UserdataFileName.lock(domid: $0.key, uuid: $0.value).description })
        for (name, entry) in made {
            guard let parsed = UserdataFileName(parsing: name), alive[parsed.domid] != parsed.uuid else {
                let isDirectory = if case .directory = entry { true } else { false }
                if liveLocks.contains(name) && !isDirectory { continue }
                require(left.contains(name), "sweep removed \(name), which is not a dead domain's")
                continue
            }
            // A dead domain's files and symlinks go (libxl's glob, minus anything naming the lock).
            if case .directory = entry { continue }
            require(
                !left.contains(name) || containsLockName(name) || failed.contains("\(parsed.domid).\(parsed.uuid)"),
                "sweep left \(name) of a dead domain")
        }
    }

    static func containsLockName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        let lock = Array("domain-userdata-lock".utf8)
        guard bytes.count >= lock.count else { return false }
        return (0...(bytes.count - lock.count)).contains { bytes[$0..<($0 + lock.count)].elementsEqual(lock) }
    }

    static func listing() throws -> [String] {
        guard let dir = opendir(root) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func clear() {
        for name in (try? listing()) ?? [] {
            let path = root + "/" + name
            if unlink(path) != 0 { rmdir(path) }
        }
    }
}
