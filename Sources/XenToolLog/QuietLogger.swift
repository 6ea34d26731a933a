package import CXen

/// A xentoollog logger that drops every message, so opening a device on a host without Xen does not print
/// to stderr (libxen's default logger does). Errors reach callers as typed errors carrying errno instead.
/// Shared by every target that opens a libxen* handle (grant tables, event channels, libxenctrl).
///
/// C: a `xentoollog_logger` whose `vmessage`/`progress`/`destroy` do nothing (OCaml: none, the bindings
/// pass NULL and let libxen print).
package enum QuietLogger {
    /// The logger, allocated once and never freed (libxen handles keep a pointer to it).
    package nonisolated(unsafe) static let pointer: UnsafeMutablePointer<xentoollog_logger> = {
        let logger = UnsafeMutablePointer<xentoollog_logger>.allocate(capacity: 1)
        logger.initialize(
            to: xentoollog_logger(
                vmessage: { _, _, _, _, _, _ in },
                progress: { _, _, _, _, _, _ in },
                destroy: { _ in }
            ))
        return logger
    }()
}
