#if canImport(Glibc)
    package import Glibc
#elseif canImport(Musl)
    package import Musl
#endif

/// Small libc helpers every target that talks to the system needs, written once.
///
/// OCaml: none (the Unix library)
package enum Posix {
    /// The name of a directory entry returned by `readdir`, read from the entry up to its NUL and never
    /// beyond its record (copying `d_name` as a 256-byte tuple reads past a short record's end).
    package static func name(of entry: UnsafeMutablePointer<dirent>) -> [UInt8] {
        let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name) ?? 0
        let name = UnsafeRawPointer(entry).advanced(by: offset).assumingMemoryBound(to: CChar.self)
        return Array(UnsafeRawBufferPointer(start: name, count: strlen(name)))
    }

    /// Adds "close every descriptor from 3 up" to `actions`: a spawned tool gets only what the actions set
    /// up as 0–2, never our descriptors (a pty master, a gntalloc or gntdev handle, sockets).
    package static func closeOtherDescriptors(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>) {
        _ = spawnAddCloseFrom(actions, 3)
    }

    /// `pipe2(2)`.
    package static func pipe2(_ ends: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32 { linuxPipe2(ends, flags) }

    /// `splice(2)`, without offsets (both ends a pipe or a socket).
    package static func splice(
        _ input: Int32, _ inputOffset: UnsafeMutablePointer<Int64>?, _ output: Int32,
        _ outputOffset: UnsafeMutablePointer<Int64>?, _ count: Int, _ flags: UInt32
    ) -> Int {
        linuxSplice(input, inputOffset, output, outputOffset, count, flags)
    }

    /// `SPLICE_F_MOVE`, `SPLICE_F_NONBLOCK`.
    package static let spliceMove: UInt32 = 1
    package static let spliceNonBlock: UInt32 = 2
    /// `F_SETPIPE_SZ`.
    package static let setPipeSize: Int32 = 1031
}

// Declared under _GNU_SOURCE, which Swift's Glibc module does not import.
@_silgen_name("pipe2")
private func linuxPipe2(_ ends: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
@_silgen_name("splice")
private func linuxSplice(
    _ input: Int32, _ inputOffset: UnsafeMutablePointer<Int64>?, _ output: Int32,
    _ outputOffset: UnsafeMutablePointer<Int64>?, _ count: Int, _ flags: UInt32
) -> Int

// glibc 2.34+; declared under __USE_MISC, which Swift's Glibc module does not import.
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func spawnAddCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32
