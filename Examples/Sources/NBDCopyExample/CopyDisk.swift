import NBDClient
import XenCore

/// Why `copyDisk` refused to copy.
public enum CopyDiskError: Error, Equatable {
    /// The destination export is smaller than the source.
    case destinationTooSmall(source: UInt64, destination: UInt64)
}

/// Copies the whole export at the NBD URI `source` to the start of the export at `destination` (a small
/// `nbdcopy`), `chunkBytes` at a time, and flushes the destination. Returns the bytes copied.
public func copyDisk(from source: String, to destination: String, chunkBytes: Int = 1 << 20) async throws -> UInt64 {
    let input = try await NBDClient.connect(uri: source)
    let output: NBDClient
    do { output = try await NBDClient.connect(uri: destination) } catch {
        await input.disconnect()
        throw error
    }
    let copied: Result<UInt64, any Error>
    do { copied = .success(try await copyDisk(from: input, to: output, chunkBytes: chunkBytes)) } catch {
        copied = .failure(error)
    }
    await input.disconnect()
    await output.disconnect()
    return try copied.get()
}

/// Copies every byte of `input`'s export to the start of `output`'s, one chunk in flight at a time, and
/// flushes `output`. Returns the bytes copied.
public func copyDisk(from input: NBDClient, to output: NBDClient, chunkBytes: Int = 1 << 20) async throws -> UInt64 {
    guard output.size >= input.size else {
        throw CopyDiskError.destinationTooSmall(source: input.size, destination: output.size)
    }
    let buffer = PageBuffer(pages: (chunkBytes + 4095) / 4096)
    var offset: UInt64 = 0
    while offset < input.size {
        let chunk = buffer.slice(from: 0, count: Int(min(UInt64(chunkBytes), input.size - offset)))
        try await input.read(at: offset, into: [chunk])
        try await output.write(at: offset, from: [chunk])
        offset += UInt64(chunk.count)
    }
    try await output.flush()
    return input.size
}
