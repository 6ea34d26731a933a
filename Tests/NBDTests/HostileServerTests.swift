import BlockDevice
import Foundation
import NBDClient
import NBDProtocol
import Testing
import XenCore

/// Encodes a structured reply chunk header.
func chunk(_ type: UInt16, flags: UInt16 = 0, cookie: UInt64, payload: [UInt8]) -> [UInt8] {
    var writer = NBDWriter()
    writer.put(NBDMagic.structuredReply)
    writer.put(flags)
    writer.put(type)
    writer.put(cookie)
    writer.put(UInt32(payload.count))
    writer.put(bytes: payload)
    return writer.bytes
}

/// One structured data chunk that ends a reply: `count` bytes of `byte` at `offset`.
func dataChunk(cookie: UInt64, offset: UInt64, byte: UInt8 = 9, count: Int = 4096) -> [UInt8] {
    chunk(1, flags: 1, cookie: cookie, payload: be64(offset) + [UInt8](repeating: byte, count: count))
}

func be64(_ value: UInt64) -> [UInt8] {
    var writer = NBDWriter()
    writer.put(value)
    return writer.bytes
}

@Suite("NBDClient against a hostile server", .serialized)
struct HostileServerTests {
    /// Connects, starts `count` reads at once, and returns how each ended.
    private func readsAgainst(_ server: ScriptedServer, count: Int = 4) async throws -> [NBDError?] {
        let client = try await NBDClient.connect(uri: server.uri)
        defer { server.stop() }
        let results = await withTaskGroup(of: NBDError?.self) { group in
            for index in 0..<count {
                group.addTask {
                    do {
                        try await client.read(at: UInt64(index) * 4096, into: [PageBuffer(pages: 1)])
                        return nil
                    } catch let error as NBDError { return error } catch { return .io("\(error)") }
                }
            }
            var all: [NBDError?] = []
            for await result in group { all.append(result) }
            return all
        }
        // The connection is dead afterwards: further requests fail at once, typed.
        await #expect(throws: NBDError.self) { try await client.read(at: 0, into: [PageBuffer(pages: 1)]) }
        await client.disconnect()
        return results
    }

    private func allFailedWithProtocolError(_ results: [NBDError?]) -> Bool {
        results.allSatisfy {
            switch $0 {
            case .protocolError?, .disconnected?: true
            default: false
            }
        } && results.contains { if case .protocolError? = $0 { true } else { false } }
    }

    @Test func wrongReplyMagic() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            _ = connection.request()
            connection.write([0xde, 0xad, 0xbe, 0xef] + [UInt8](repeating: 0, count: 16))
        }
        #expect(allFailedWithProtocolError(try await readsAgainst(server)))
    }

    @Test func unknownCookie() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            _ = connection.request()
            connection.write(chunk(0, flags: 1, cookie: 0xfeed, payload: []))
        }
        #expect(allFailedWithProtocolError(try await readsAgainst(server)))
    }

    @Test func oversizeChunk() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            guard let request = connection.request() else { return }
            var header = chunk(1, flags: 1, cookie: request.cookie, payload: [])
            header[16..<20] = [0x10, 0, 0, 0]
            connection.write(header)
        }
        #expect(allFailedWithProtocolError(try await readsAgainst(server)))
    }

    @Test func dataOutsideTheRequest() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            guard let request = connection.request() else { return }
            connection.write(
                chunk(1, flags: 1, cookie: request.cookie, payload: be64(request.offset + 8192) + [1, 2, 3, 4]))
        }
        #expect(allFailedWithProtocolError(try await readsAgainst(server)))
    }

    @Test func truncatedReplyThenEOF() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            guard let request = connection.request() else { return }
            // A simple reply promising 4096 bytes, then only 100 and EOF.
            var writer = NBDWriter()
            writer.put(NBDMagic.simpleReply)
            writer.put(UInt32(0))
            writer.put(request.cookie)
            connection.write(writer.bytes + [UInt8](repeating: 7, count: 100))
        }
        let results = try await readsAgainst(server)
        #expect(results.allSatisfy { $0 == .disconnected }, "\(results)")
    }

    @Test func unknownNonErrorChunkType() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            guard let request = connection.request() else { return }
            connection.write(chunk(0x42, flags: 1, cookie: request.cookie, payload: []))
        }
        #expect(allFailedWithProtocolError(try await readsAgainst(server)))
    }

    @Test func badHandshakeMagic() async throws {
        let server = try ScriptedServer { connection in
            connection.write(Array("NBDMAGIC".utf8) + Array("IHAVEOPX".utf8) + [0, 3])
        }
        defer { server.stop() }
        await #expect(throws: NBDError.protocolError(.badMagic(what: "handshake style", got: 0x4948_4156_454f_5058))) {
            try await NBDClient.connect(uri: server.uri)
        }
    }

    @Test func unknownErrorChunkFailsOnlyTheRequest() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            guard let first = connection.request() else { return }
            connection.write(chunk(0x8042, flags: 1, cookie: first.cookie, payload: [0, 0, 0, 5, 0, 0]))
            guard let second = connection.request() else { return }
            connection.write(dataChunk(cookie: second.cookie, offset: second.offset))
            _ = connection.request()
        }
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri)
        await #expect(throws: NBDError.serverError(command: .read, offset: 0, errno: .eio, message: "")) {
            try await client.read(at: 0, into: [PageBuffer(pages: 1)])
        }
        let buffer = PageBuffer(pages: 1)
        try await client.read(at: 4096, into: [buffer])
        #expect(buffer.bytes.allSatisfy { $0 == 9 })
        await client.disconnect()
    }

    @Test func goRefusedByPolicyFallsBackToExportName() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake(size: 65536, go: 0x8000_0002, structured: false) else { return }
            guard let request = connection.request() else { return }
            var writer = NBDWriter()
            writer.put(NBDMagic.simpleReply)
            writer.put(UInt32(0))
            writer.put(request.cookie)
            connection.write(writer.bytes + [UInt8](repeating: 0x5a, count: Int(request.length)))
            _ = connection.request()
        }
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri)
        #expect(client.session.usedExportName && client.size == 65536)
        let buffer = PageBuffer(pages: 1)
        try await client.read(at: 0, into: [buffer])
        #expect(buffer.bytes.allSatisfy { $0 == 0x5a })
        await client.disconnect()
    }

    @Test func extendedHeaders() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake(extended: true) else { return }
            guard let request = connection.request(extended: true) else { return }
            var writer = NBDWriter()
            writer.put(NBDMagic.extendedReply)
            writer.put(UInt16(1))
            writer.put(UInt16(1))
            writer.put(request.cookie)
            writer.put(request.offset)
            writer.put(UInt64(8 + request.length))
            writer.put(request.offset)
            connection.write(writer.bytes + [UInt8](repeating: 0x33, count: Int(request.length)))
            _ = connection.request(extended: true)
        }
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri)
        #expect(client.session.extendedHeaders)
        let buffer = PageBuffer(pages: 2)
        try await client.read(at: 8192, into: [buffer])
        #expect(buffer.bytes.allSatisfy { $0 == 0x33 })
        await client.disconnect()
    }

    @Test func requestTimeout() async throws {
        let server = try ScriptedServer { connection in
            guard connection.handshake() else { return }
            _ = connection.request()
            usleep(400_000)
        }
        defer { server.stop() }
        let client = try await NBDClient.connect(
            uri: server.uri, options: NBDClientOptions(requestTimeout: .milliseconds(50)))
        await #expect(throws: NBDError.timedOut(operation: "read request")) {
            try await client.read(at: 0, into: [PageBuffer(pages: 1)])
        }
        await client.disconnect()
    }

    @Test func connectTimeoutOnSilentServer() async throws {
        let server = try ScriptedServer { _ in usleep(400_000) }
        defer { server.stop() }
        await #expect(throws: NBDError.timedOut(operation: "NBD handshake with \(NBDEndpoint.unix(path: server.path))"))
        {
            try await NBDClient.connect(uri: server.uri, options: NBDClientOptions(connectTimeout: .milliseconds(50)))
        }
    }
}
