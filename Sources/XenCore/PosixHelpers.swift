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
}

// glibc 2.34+; declared under __USE_MISC, which Swift's Glibc module does not import.
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func spawnAddCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32
