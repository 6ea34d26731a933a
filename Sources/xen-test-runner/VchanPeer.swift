import CXen
import Vchan
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `xen-test-runner vchan-peer c|swift server|client DOMID PATH READ WRITE SEND RECEIVE SEND_SEED RECEIVE_SEED`:
/// one vchan endpoint in a process of its own, over libxenvchan (`c`) or our Vchan (`swift`), so the checks
/// can kill it, and can compare C↔C with Swift↔Swift under the same conditions. It sends SEND bytes of
/// one pattern while checking RECEIVE bytes of the other, then prints `OK <seconds>` (from connected to
/// done) and closes. Progress lines on stdout: `PUBLISHED` (server), `CONNECTED`; failure: `ERR <why>`.
enum VchanPeer {
    struct Arguments {
        let swift: Bool
        let server: Bool
        let domain: Int32
        let path: String
        let readSize: Int
        let writeSize: Int
        let send: Int
        let receive: Int
        let outgoing: VchanPattern
        let incoming: VchanPattern

        init?(_ words: [String]) {
            guard words.count == 10, let domain = Int32(words[2]), let read = Int(words[4]),
                let write = Int(words[5]), let send = Int(words[6]), let receive = Int(words[7]),
                let sendSeed = UInt64(words[8]), let receiveSeed = UInt64(words[9])
            else { return nil }
            swift = words[0] == "swift"
            server = words[1] == "server"
            self.domain = domain
            path = words[3]
            readSize = read
            writeSize = write
            self.send = send
            self.receive = receive
            outgoing = VchanPattern(seed: sendSeed)
            incoming = VchanPattern(seed: receiveSeed)
        }
    }

    static func main(_ words: [String]) async -> Int32 {
        guard let arguments = Arguments(words) else {
            say("ERR usage: vchan-peer c|swift server|client DOMID PATH READ WRITE SEND RECEIVE SEED SEED")
            return 2
        }
        return arguments.swift ? await runSwift(arguments) : runC(arguments)
    }

    /// One line on stdout, in one write.
    static func say(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    }

    // MARK: - libxenvchan

    private static func runC(_ arguments: Arguments) -> Int32 {
        let control: UnsafeMutablePointer<libxenvchan>? =
            arguments.server
            ? libxenvchan_server_init(nil, arguments.domain, arguments.path, arguments.readSize, arguments.writeSize)
            : libxenvchan_client_init(nil, arguments.domain, arguments.path)
        guard let control else {
            say(errnoText("ERR libxenvchan_\(arguments.server ? "server" : "client")_init"))
            return 1
        }
        defer { libxenvchan_close(control) }
        control.pointee.blocking = 0
        if arguments.server {
            say("PUBLISHED")
            while libxenvchan_is_open(control) == 2 { _ = libxenvchan_wait(control) }
        }
        say("CONNECTED")
        let start = MonotonicClock.seconds()
        var sent = 0
        var received = 0
        let buffer = PageBuffer(pages: 16)
        // vchan-socket-proxy's loop: move what can move without blocking, sleep on the event channel only
        // when nothing moved (both calls have asked for an event by then).
        while sent < arguments.send || received < arguments.receive {
            var moved = false
            if sent < arguments.send {
                let count = min(buffer.count, arguments.send - sent)
                let written = libxenvchan_write(
                    control, arguments.outgoing.window(at: sent, count: count).pointer, count)
                guard written >= 0 else { return fail("libxenvchan_write after \(sent) bytes") }
                sent += Int(written)
                moved = moved || written > 0
            }
            if received < arguments.receive {
                let count = min(buffer.count, arguments.receive - received)
                let got = libxenvchan_read(control, buffer.pointer, count)
                guard got >= 0 else { return fail("libxenvchan_read after \(received) bytes") }
                guard arguments.incoming.matches(buffer.pointer, count: Int(got), at: received) else {
                    return fail("byte mismatch at \(received)")
                }
                received += Int(got)
                moved = moved || got > 0
            }
            if !moved {
                guard libxenvchan_is_open(control) != 0 else { return fail("peer closed at \(sent)/\(received)") }
                guard libxenvchan_wait(control) == 0 else { return fail("libxenvchan_wait") }
            }
        }
        say("OK \(MonotonicClock.seconds() - start)")
        return 0
    }

    private static func fail(_ what: String) -> Int32 {
        say("ERR \(what)")
        return 1
    }

    // MARK: - Our Vchan

    private static func runSwift(_ arguments: Arguments) async -> Int32 {
        do {
            let xenstore = try await XenStoreClient.make()
            let environment = try VchanEnvironment.xen(xenstore: xenstore)
            let options = VchanOptions(xenstorePath: arguments.path)
            let peer = DomainID(UInt16(arguments.domain))
            let port = try VchanPort("peer")
            let connection: VchanConnection
            if arguments.server {
                connection = try await VchanServer.publish(
                    domain: peer, port: port, readSize: arguments.readSize, writeSize: arguments.writeSize,
                    environment: environment, options: options)
                say("PUBLISHED")
                try await connection.waitForPeer()
            } else {
                connection = try await VchanClient.connect(
                    domain: peer, port: port, environment: environment, options: options)
            }
            say("CONNECTED")
            let seconds = try await exchange(
                connection, send: arguments.send, outgoing: arguments.outgoing, receive: arguments.receive,
                incoming: arguments.incoming)
            say("OK \(seconds)")
            await connection.close()
            await xenstore.close()
            return 0
        } catch {
            say("ERR \(error)")
            return 1
        }
    }
}
